//! Typed plugin settings: deploy.toml's `[plugin.settings]` merged with the environment's, as JSON.

use crate::PluginError;
use serde::de::DeserializeOwned;

/// Parse the context's settings into the plugin's own settings struct.
/// Unknown keys are the plugin's choice (`#[serde(deny_unknown_fields)]` to refuse them).
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, PluginError> {
    serde_json::from_str(json).map_err(|e| {
        PluginError::new(format!("invalid plugin settings: {e}"))
            .with_hint("check [plugin.settings] in deploy.toml")
    })
}
