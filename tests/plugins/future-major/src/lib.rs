//! A plugin built for `deploy:plugin@2.0.0`, a major version this host does not load: the
//! sandbox suite checks it is refused with a message naming both versions.

wit_bindgen::generate!({
    inline: r#"
        package deploy:plugin@2.0.0;

        interface stack {
            describe: func() -> string;
        }

        world plugin {
            export stack;
        }
    "#,
    world: "plugin",
});

pub struct Future;

impl exports::deploy::plugin::stack::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

#[cfg(target_arch = "wasm32")]
export!(Future);
