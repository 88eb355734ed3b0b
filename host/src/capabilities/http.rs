//! Outbound HTTP, through one gate: granted `host:port` only, a timeout, a capped body.

use super::CapabilityContext;
use crate::events::Event;
use crate::runtime::{CapabilityError, HttpMethod, HttpRequest, HttpResponse};
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn request(ctx: &CapabilityContext, req: HttpRequest) -> Result<HttpResponse, CapabilityError> {
    let url = reqwest::Url::parse(&req.url)
        .map_err(|e| CapabilityError::Failed(format!("bad URL `{}`: {e}", req.url)))?;
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(0);
    let target = format!("{host}:{port}");
    if !is_granted(&ctx.grants.http, &host, port) {
        return Err(ctx.denied("reach", &target, "grants.http"));
    }
    let method = match req.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
        HttpMethod::Head => reqwest::Method::HEAD,
    };
    let shown_url = ctx.redactor.redact(&req.url);
    if req.mutates && ctx.dry_run {
        ctx.events.emit(Event::Planned {
            step: format!("{method} {shown_url}"),
            purpose: "HTTP request".into(),
        });
        ctx.events.emit(Event::HttpRequest { method: method.to_string(), url: shown_url, status: 0, planned: true });
        return Ok(HttpResponse { status: 0, headers: vec![], body: String::new(), planned: true });
    }
    let mut builder = ctx
        .http
        .request(method.clone(), url)
        .timeout(req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT));
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let mut response = builder.send().await.map_err(|e| {
        if e.is_timeout() {
            CapabilityError::TimedOut(format!("{method} {shown_url}"))
        } else {
            CapabilityError::Failed(format!("{method} {shown_url}: {e}"))
        }
    })?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let mut body = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CapabilityError::Failed(format!("{method} {shown_url}: reading body: {e}")))?
    {
        total += chunk.len();
        let room = ctx.output_limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if total > ctx.output_limit * 4 {
            break; // far past the cap: stop downloading
        }
    }
    let mut body = String::from_utf8_lossy(&body).into_owned();
    if total > ctx.output_limit {
        body.push_str(&format!("\n[... body truncated at {} bytes]", ctx.output_limit));
    }
    ctx.events.emit(Event::HttpRequest { method: method.to_string(), url: shown_url, status, planned: false });
    Ok(HttpResponse { status, headers, body, planned: false })
}

/// `host:port` matches exactly; a bare `host` grant allows any port.
pub fn is_granted(grants: &[String], host: &str, port: u16) -> bool {
    grants.iter().any(|g| match g.rsplit_once(':') {
        Some((h, p)) => h.eq_ignore_ascii_case(host) && p.parse() == Ok(port),
        None => g.eq_ignore_ascii_case(host),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn grants_match_host_and_port() {
        let g = vec!["127.0.0.1:8000".to_string(), "api.render.com".to_string()];
        assert!(super::is_granted(&g, "127.0.0.1", 8000));
        assert!(!super::is_granted(&g, "127.0.0.1", 8001));
        assert!(super::is_granted(&g, "api.render.com", 443));
        assert!(!super::is_granted(&g, "evil.example", 443));
    }
}
