//! The server's configuration file (`orb_server::config::file::ServerFile`: `[server]`,
//! `[limits]`, `[shutdown]`, `[store]`, `[groups]`, `[acl]`) from arbitrary TOML text, then
//! `validate`, which types every value (durations, addresses, sizes, the store URL, group
//! selectors, ACL rules) and reports every problem. Nothing may panic, a refused configuration
//! names at least one problem, and what `orb config show` prints of it (this schema, secrets
//! redacted) reads back as the same configuration. Token files are not read (the fuzzer must not
//! touch the file system): their keys are cleared first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_server::config::file::ServerFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut file) = toml::from_str::<ServerFile>(text) else { return };
    file.server.admin_token_file = None;
    file.server.agent_token_file = None;
    match file.validate() {
        Ok(config) => assert_eq!(config.limits.max_frame as u64, file.limits.max_frame, "the frame limit is kept"),
        Err(problems) => assert!(!problems.is_empty(), "a refusal names at least one problem"),
    }
    // Printed as `orb config show` prints it: tokens and the store URL's password are redacted,
    // everything else must read back unchanged.
    let mut shown = file.clone();
    shown.server.admin_token = None;
    shown.server.agent_token = None;
    let printed = toml::to_string(&shown).expect("a configuration that was read can be printed");
    let mut back: ServerFile = toml::from_str(&printed).expect("a printed configuration reads back");
    back.store.url.clone_from(&shown.store.url);
    assert_eq!(back, shown, "printed as:\n{printed}");
});
