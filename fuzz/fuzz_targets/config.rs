//! The server's configuration file (`orb_server::config::file::ServerFile`: `[server]`,
//! `[limits]`, `[shutdown]`, `[store]`, `[groups]`, `[acl]`) from arbitrary TOML text, then
//! `validate`, which types every value (durations, addresses, sizes, the store URL, group
//! selectors, ACL rules) and reports every problem. Nothing may panic, a valid configuration
//! comes with no problems and a refused one with at least one. Token files are not read (the
//! fuzzer must not touch the file system): their keys are cleared first.
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
});
