//! The layers of `src/` (docs/08-internals/README.md): no two modules use each other, even through
//! others, and the domain (entry, packet, partition, dead letters, protocol) and the bottom (exit
//! statuses, faults) use nothing above them, as `scripts/module-graph` reads them.

use std::process::Command;

#[test]
fn the_modules_have_no_cycle_and_the_domain_uses_nothing_above_it() {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/module-graph"))
        .output()
        .expect("run python3 scripts/module-graph");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
