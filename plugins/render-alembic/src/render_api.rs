//! Render's REST API on the wire: the requests this plugin makes and how it reads the answers.
//!
//! Requests are plain data like commands: the host sends them (with its grants, timeouts and
//! dry-run), the plugin only builds them and reads the JSON that comes back.

use plugin_sdk::{HttpMethod, HttpRequest};
use serde::Deserialize;

/// Token returned under dry-run, when the deploy request was planned and not sent.
pub const DRY_RUN_TOKEN: &str = "dry-run";
/// Prefix of a token that names a commit instead of a deploy: Render queued the deploy
/// (`202`) without saying its id yet, so `poll` looks it up by commit.
pub const COMMIT_TOKEN: &str = "commit:";

const TIMEOUT_MS: u64 = 30_000;

fn request(
    method: HttpMethod,
    url: String,
    key: &str,
    body: Option<String>,
    mutates: bool,
) -> HttpRequest {
    let mut headers = vec![
        ("Authorization".to_string(), format!("Bearer {key}")),
        ("Accept".to_string(), "application/json".to_string()),
    ];
    if body.is_some() {
        headers.push(("Content-Type".to_string(), "application/json".to_string()));
    }
    HttpRequest {
        method,
        url,
        headers,
        body,
        timeout_ms: Some(TIMEOUT_MS),
        mutates,
    }
}

/// `POST /services/{id}/deploys` for one commit.
pub fn trigger_deploy(api: &str, service: &str, commit: &str, key: &str) -> HttpRequest {
    let body = serde_json::json!({ "clearCache": "do_not_clear", "commitId": commit }).to_string();
    request(
        HttpMethod::Post,
        format!("{api}/services/{service}/deploys"),
        key,
        Some(body),
        true,
    )
}

/// `GET /services/{id}/deploys/{deploy}`.
pub fn get_deploy(api: &str, service: &str, deploy: &str, key: &str) -> HttpRequest {
    request(
        HttpMethod::Get,
        format!("{api}/services/{service}/deploys/{deploy}"),
        key,
        None,
        false,
    )
}

/// `GET /services/{id}/deploys?limit=N`: the most recent deploys, newest first.
pub fn list_deploys(api: &str, service: &str, key: &str, limit: u32) -> HttpRequest {
    request(
        HttpMethod::Get,
        format!("{api}/services/{service}/deploys?limit={limit}"),
        key,
        None,
        false,
    )
}

/// `POST /services/{id}/rollbacks`: redeploy an earlier deploy's build.
pub fn rollback(api: &str, service: &str, deploy: &str, key: &str) -> HttpRequest {
    let body = serde_json::json!({ "deployId": deploy }).to_string();
    request(
        HttpMethod::Post,
        format!("{api}/services/{service}/rollbacks"),
        key,
        Some(body),
        true,
    )
}

/// `GET /services/{id}`: checks the key and the service id before anything changes.
pub fn get_service(api: &str, service: &str, key: &str) -> HttpRequest {
    request(
        HttpMethod::Get,
        format!("{api}/services/{service}"),
        key,
        None,
        false,
    )
}

/// The parts of a Render deploy object this plugin uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Deploy {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub commit: Option<Commit>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Commit {
    pub id: String,
}

impl Deploy {
    pub fn commit_id(&self) -> Option<&str> {
        self.commit.as_ref().map(|c| c.id.as_str())
    }
}

/// Where a deploy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Live,
    Failed,
}

/// Render's deploy statuses. An unknown one counts as still running: the host's deadline
/// bounds the wait, and failing a deploy Render may still finish would be worse.
pub fn state(status: &str) -> State {
    match status {
        "live" => State::Live,
        "build_failed" | "update_failed" | "canceled" | "deactivated" | "pre_deploy_failed" => {
            State::Failed
        }
        _ => State::Running,
    }
}

pub fn parse_deploy(body: &str) -> Result<Deploy, String> {
    serde_json::from_str(body).map_err(|e| {
        format!(
            "unexpected answer from Render ({e}): {}",
            crate::python::shorten(body, 200)
        )
    })
}

/// The list endpoint wraps each deploy with a pagination cursor: `[{"deploy": {...}, "cursor": "..."}]`.
pub fn parse_deploy_list(body: &str) -> Result<Vec<Deploy>, String> {
    #[derive(Deserialize)]
    struct Item {
        deploy: Deploy,
    }
    let items: Vec<Item> = serde_json::from_str(body).map_err(|e| {
        format!(
            "unexpected answer from Render ({e}): {}",
            crate::python::shorten(body, 200)
        )
    })?;
    Ok(items.into_iter().map(|i| i.deploy).collect())
}

/// The newest deploy of `commit` (a full SHA or a prefix of one) in a newest-first list,
/// optionally only among deploys that went live (the ones a rollback can return to).
pub fn find_by_commit<'d>(
    deploys: &'d [Deploy],
    commit: &str,
    went_live: bool,
) -> Option<&'d Deploy> {
    deploys.iter().find(|d| {
        let matches = d.commit_id().is_some_and(|c| {
            !commit.is_empty() && (c.starts_with(commit) || commit.starts_with(c))
        });
        matches && (!went_live || matches!(d.status.as_str(), "live" | "deactivated"))
    })
}

/// Rate limits and server errors are worth asking again; other failures are answers.
pub fn is_transient(status: u16) -> bool {
    status == 429 || status >= 500
}

/// The error a non-2xx answer carries: Render's `{"id": ..., "message": ...}`, else the body.
pub fn error_message(status: u16, body: &str) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        message: String,
    }
    let detail = serde_json::from_str::<ApiError>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| crate::python::shorten(body, 200));
    let detail = if detail.is_empty() {
        "(no body)".to_string()
    } else {
        detail
    };
    format!("Render API answered {status}: {detail}")
}

/// A hint for the usual non-2xx answers.
pub fn error_hint(status: u16) -> Option<&'static str> {
    match status {
        401 => Some(
            "the API key is missing or revoked: check the variable named by `render_api_key_env`",
        ),
        403 => Some("the API key's owner has no access to this service"),
        404 => Some("check `render_service_id` (srv-...) and that the key's workspace owns it"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deploy object as Render returns it from `POST /deploys` (trimmed to typical fields).
    const CREATED: &str = r#"{
        "id": "dep-d2f4k1ruibrs73fq0p9g",
        "commit": {
            "id": "5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e",
            "message": "notes: add pinned column",
            "createdAt": "2026-02-22T10:12:03Z"
        },
        "status": "created",
        "trigger": "api",
        "startedAt": null,
        "finishedAt": null,
        "createdAt": "2026-02-22T10:14:41.204837Z",
        "updatedAt": "2026-02-22T10:14:41.204837Z"
    }"#;

    const LIST: &str = r#"[
        {"deploy": {"id": "dep-new", "commit": {"id": "5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e", "message": "x", "createdAt": "2026-02-22T10:12:03Z"},
                    "status": "build_in_progress", "trigger": "api", "createdAt": "2026-02-22T10:14:41Z", "updatedAt": "2026-02-22T10:15:00Z"},
         "cursor": "Yml6MjAyNi0wMi0yMlQxMDoxNDo0MVo="},
        {"deploy": {"id": "dep-old-failed", "commit": {"id": "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "message": "y", "createdAt": "2026-02-20T09:00:00Z"},
                    "status": "build_failed", "trigger": "api", "createdAt": "2026-02-21T08:00:00Z", "updatedAt": "2026-02-21T08:03:00Z", "finishedAt": "2026-02-21T08:03:00Z"},
         "cursor": "Yml6MjAyNi0wMi0yMVQwODowMDowMFo="},
        {"deploy": {"id": "dep-old-live", "commit": {"id": "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "message": "y", "createdAt": "2026-02-20T09:00:00Z"},
                    "status": "deactivated", "trigger": "new_commit", "createdAt": "2026-02-20T09:01:00Z", "updatedAt": "2026-02-22T10:20:00Z", "finishedAt": "2026-02-20T09:05:00Z"},
         "cursor": "Yml6MjAyNi0wMi0yMFQwOTowMTowMFo="}
    ]"#;

    #[test]
    fn trigger_deploy_request() {
        let r = trigger_deploy("https://api.render.com/v1", "srv-abc", "5d6e7f8", "rnd_key");
        assert_eq!(r.url, "https://api.render.com/v1/services/srv-abc/deploys");
        assert!(matches!(r.method, HttpMethod::Post));
        assert!(r.mutates);
        let body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"clearCache": "do_not_clear", "commitId": "5d6e7f8"})
        );
        assert_eq!(
            r.headers,
            vec![
                ("Authorization".to_string(), "Bearer rnd_key".to_string()),
                ("Accept".to_string(), "application/json".to_string()),
                ("Content-Type".to_string(), "application/json".to_string()),
            ]
        );
    }

    #[test]
    fn read_requests_do_not_mutate() {
        let g = get_deploy("https://api.render.com/v1", "srv-abc", "dep-1", "k");
        assert_eq!(
            g.url,
            "https://api.render.com/v1/services/srv-abc/deploys/dep-1"
        );
        assert!(!g.mutates && g.body.is_none());
        assert_eq!(
            list_deploys("https://x/v1", "srv-abc", "k", 20).url,
            "https://x/v1/services/srv-abc/deploys?limit=20"
        );
        assert!(!get_service("https://x/v1", "srv-abc", "k").mutates);
    }

    #[test]
    fn rollback_request() {
        let r = rollback("https://api.render.com/v1", "srv-abc", "dep-old-live", "k");
        assert_eq!(
            r.url,
            "https://api.render.com/v1/services/srv-abc/rollbacks"
        );
        assert!(r.mutates);
        assert_eq!(r.body.as_deref(), Some(r#"{"deployId":"dep-old-live"}"#));
    }

    #[test]
    fn parse_created_deploy() {
        let d = parse_deploy(CREATED).unwrap();
        assert_eq!(d.id, "dep-d2f4k1ruibrs73fq0p9g");
        assert_eq!(d.status, "created");
        assert_eq!(
            d.commit_id(),
            Some("5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e")
        );
        // Image-backed services have no commit.
        let image = parse_deploy(
            r#"{"id":"dep-x","status":"live","image":{"ref":"ghcr.io/a/b:1","sha":"sha256:00"}}"#,
        )
        .unwrap();
        assert_eq!(image.commit_id(), None);
        assert!(
            parse_deploy("")
                .unwrap_err()
                .contains("unexpected answer from Render")
        );
    }

    #[test]
    fn statuses() {
        for s in [
            "created",
            "queued",
            "build_in_progress",
            "update_in_progress",
            "pre_deploy_in_progress",
        ] {
            assert_eq!(state(s), State::Running, "{s}");
        }
        for s in [
            "build_failed",
            "update_failed",
            "canceled",
            "deactivated",
            "pre_deploy_failed",
        ] {
            assert_eq!(state(s), State::Failed, "{s}");
        }
        assert_eq!(state("live"), State::Live);
        assert_eq!(state("something_new"), State::Running);
    }

    #[test]
    fn list_and_find_by_commit() {
        let deploys = parse_deploy_list(LIST).unwrap();
        assert_eq!(deploys.len(), 3);
        assert_eq!(
            find_by_commit(&deploys, "5d6e7f8", false).unwrap().id,
            "dep-new"
        );
        // A rollback needs a deploy that went live, not the latest failed attempt.
        assert_eq!(
            find_by_commit(&deploys, "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", true)
                .unwrap()
                .id,
            "dep-old-live"
        );
        assert!(find_by_commit(&deploys, "ffff", false).is_none());
        assert!(find_by_commit(&deploys, "", false).is_none());
    }

    #[test]
    fn errors() {
        assert_eq!(
            error_message(404, r#"{"id":"not-found","message":"service not found"}"#),
            "Render API answered 404: service not found"
        );
        assert_eq!(
            error_message(502, "<html>Bad Gateway</html>"),
            "Render API answered 502: <html>Bad Gateway</html>"
        );
        assert_eq!(error_message(401, ""), "Render API answered 401: (no body)");
        assert!(is_transient(429) && is_transient(503) && !is_transient(400));
        assert!(error_hint(401).unwrap().contains("render_api_key_env"));
    }
}
