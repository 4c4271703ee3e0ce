//! Integration tests of the rack configuration API (`tapsplice::config`): the examples in
//! configs/ load, every kind of problem is reported as `file:line:col: key: message` on the
//! right place, all problems are reported at once, and the EAL argv is what DPDK expects.

use std::path::{Path, PathBuf};
use tapsplice::config::{self, ConfigErrors, RackConfig, Role};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn ok(text: &str) -> RackConfig {
    match config::parse(text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid configuration, got:\n{e}"),
    }
}

fn errs(text: &str) -> Vec<String> {
    match config::parse(text, "t.toml") {
        Ok(_) => panic!("expected errors, the configuration was accepted:\n{text}"),
        Err(e) => {
            let shown = e.to_string();
            let lines: Vec<String> = shown.lines().map(str::to_owned).collect();
            assert_eq!(lines.len(), e.len(), "one line per problem");
            lines
        }
    }
}

/// Asserts that some problem line starts with `prefix` (file:line:col: key:) and contains
/// `needle`.
fn has(lines: &[String], prefix: &str, needle: &str) {
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle)),
        "no problem `{prefix} ... {needle}` in:\n{}",
        lines.join("\n")
    );
}

/// A small valid forward rack; line numbers are referred to by the tests below.
const BASE: &str = r#"[node]
id = "t1"

[eal]
file_prefix = "t1"

[[port]]
name = "a"
device = "net_tap0"

[[port]]
name = "b"
device = "net_tap1"

[forward]
pairs = [["a", "b"]]
"#;

fn with(replace: &str, by: &str) -> String {
    assert!(BASE.contains(replace), "BASE has no `{replace}`");
    BASE.replacen(replace, by, 1)
}

// ---------------------------------------------------------------------------------------
// The examples

#[test]
fn every_example_in_configs_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        // The agent's file is not a rack file: agent::config tests it.
        if path.file_name().and_then(|f| f.to_str()) == Some("agent.toml") {
            continue;
        }
        match config::load(&path) {
            Ok(cfg) => assert!(
                cfg.warnings.is_empty(),
                "{}: warnings:\n{:?}",
                path.display(),
                cfg.warnings
            ),
            Err(e) => panic!("{} does not load:\n{e}", path.display()),
        }
        n += 1;
    }
    assert!(
        n >= 4,
        "expected forward, balance, splice and tap examples, found {n}"
    );
}

#[test]
fn forward_example_contents() {
    let cfg = config::load(&configs_dir().join("forward.toml")).unwrap();
    assert_eq!(cfg.node.id, "fw1");
    assert_eq!(cfg.node.roles, vec![Role::Forward]);
    assert!(cfg.has_role(Role::Forward));
    assert!(cfg.node.roles[0] == "forward");
    assert_eq!(cfg.main_lcore(), 0);
    assert_eq!(cfg.worker_lcores(), vec![1]);
    assert_eq!(cfg.eal.memory_mb, 256);
    assert!(!cfg.eal.hugepages);
    assert_eq!(cfg.mempool.mbufs, 8191);
    assert_eq!(cfg.mempool.cache, 256);
    assert_eq!(cfg.mempool.data_room, 2176);
    assert_eq!(cfg.workers.burst, 32);
    assert!(cfg.workers.idle_backoff);
    assert_eq!(cfg.workers.idle_polls, 64);
    assert_eq!(cfg.workers.idle_max_sleep_us, 200);
    assert_eq!(cfg.port.len(), 2);
    assert_eq!(cfg.port_index("west"), Some(0));
    assert_eq!(cfg.port_index("east"), Some(1));
    assert_eq!(cfg.port_index("north"), None);
    let east = &cfg.port[1];
    // Keys left out take their defaults.
    assert_eq!(
        (
            east.rx_queues,
            east.rx_desc,
            east.tx_desc,
            east.mtu,
            east.promiscuous
        ),
        (1, 1024, 1024, 1500, true)
    );
    assert_eq!(
        east.ipv4_addresses(),
        vec!["10.99.0.253".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(cfg.port[0].addresses[0].prefix_len, 24);
    assert_eq!(
        cfg.forward.as_ref().unwrap().pairs,
        vec![["west".to_string(), "east".to_string()]]
    );
    assert_eq!(cfg.forward_pairs(), vec![(0, 1)]);
    assert_eq!(cfg.ctl.socket, PathBuf::from("/run/tapsplice/fw1.sock"));
    assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:9464");
    assert!(cfg.source.ends_with("forward.toml"));
}

#[test]
fn eal_args_for_the_forward_example() {
    let cfg = config::load(&configs_dir().join("forward.toml")).unwrap();
    let args = cfg.eal_args("tapsplice");
    let expect: Vec<&str> = vec![
        "tapsplice",
        "-l",
        "0,1",
        "--main-lcore",
        "0",
        "-m",
        "256",
        "--no-huge",
        "--file-prefix",
        "tapsplice-fw1",
        "--no-pci",
        "--vdev",
        "net_tap0,iface=tsw0",
        "--vdev",
        "net_tap1,iface=tse0",
    ];
    assert_eq!(args, expect);
}

#[test]
fn eal_args_with_pci_hugepages_and_extra_args() {
    let text = r#"
[node]
id = "t1"
[eal]
lcores = "2,0-1"
memory_mb = 1024
hugepages = true
file_prefix = "t1"
pci_allow = ["0000:05:00.0,rxq_cqe_comp_en=0", "0000:03:00.0"]
extra_args = ["--log-level=pmd.net.tap:debug"]
[[port]]
name = "a"
device = "0000:03:00.0"
args = "txq_inline=128"
[[port]]
name = "b"
device = "0000:04:00.1"
[[port]]
name = "c"
device = "net_ring0"
[forward]
pairs = [["a", "b"]]
"#;
    let cfg = ok(text);
    assert_eq!(cfg.main_lcore(), 2);
    assert_eq!(cfg.worker_lcores(), vec![0, 1]);
    let expect: Vec<&str> = vec![
        "prog",
        "-l",
        "2,0-1",
        "--main-lcore",
        "2",
        "-m",
        "1024",
        "--file-prefix",
        "t1",
        "-a",
        "0000:05:00.0,rxq_cqe_comp_en=0",
        "-a",
        "0000:03:00.0,txq_inline=128",
        "-a",
        "0000:04:00.1",
        "--vdev",
        "net_ring0",
        "--log-level=pmd.net.tap:debug",
    ];
    assert_eq!(cfg.eal_args("prog"), expect);
}

#[test]
fn minimal_file_takes_the_defaults() {
    let cfg = ok(BASE);
    assert_eq!(cfg.eal.lcores, "0,1");
    assert_eq!(cfg.eal.memory_mb, 256);
    assert!(cfg.eal.hugepages);
    assert!(cfg.eal.pci_allow.is_empty() && cfg.eal.extra_args.is_empty());
    assert_eq!(cfg.node.roles, vec![Role::Forward]);
    assert_eq!(cfg.timers.heartbeat_interval_ms, 10);
    assert_eq!(cfg.ctl.socket, PathBuf::from("/run/tapsplice/t1.sock"));
    assert!(cfg.metrics.enabled);
    assert!(cfg.warnings.is_empty());
    let args = cfg.eal_args("x");
    assert!(!args.contains(&"--no-huge".to_string()));
    assert!(args.contains(&"--no-pci".to_string()));
    assert!(
        args.windows(2).any(|w| w == ["--vdev", "net_tap0"]),
        "vdev without args: {args:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Each kind of problem, on its line and column

#[test]
fn out_of_range_names_file_line_column_and_key() {
    let lines = errs(&with("name = \"b\"\n", "name = \"b\"\nrx_queues = 0\n"));
    assert_eq!(
        lines,
        vec!["t.toml:13:13: port[1].rx_queues: must be between 1 and 64 (got 0)"]
    );
}

#[test]
fn syntax_error() {
    let lines = errs(&with(
        "file_prefix = \"t1\"",
        "file_prefix = \"t1\"\nmemory_mb = 25x6",
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    has(&lines, "t.toml:6:15: eal.memory_mb: TOML syntax error", "");
}

#[test]
fn syntax_error_in_an_array_of_tables() {
    let lines = errs(&with("name = \"b\"", "name = \"b"));
    has(&lines, "t.toml:12:", "port[1].name: TOML syntax error");
}

#[test]
fn wrong_type() {
    let lines = errs(&with("name = \"b\"\n", "name = \"b\"\nmtu = \"big\"\n"));
    assert_eq!(
        lines,
        vec!["t.toml:13:7: port[1].mtu: wrong type: expected an integer between 0 and 65535, found string \"big\""]
    );
}

#[test]
fn integer_too_large_for_its_type() {
    let lines = errs(&with("name = \"b\"\n", "name = \"b\"\nrx_desc = 70000\n"));
    has(
        &lines,
        "t.toml:13:11: port[1].rx_desc:",
        "between 0 and 65535 (got 70000)",
    );
}

#[test]
fn unknown_key_with_suggestion() {
    let lines = errs(&with(
        "id = \"t1\"\n",
        "id = \"t1\"\nrole = [\"forward\"]\n",
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    has(
        &lines,
        "t.toml:3:1: node.role: unknown key `role`",
        "did you mean `roles`?",
    );
}

#[test]
fn unknown_section() {
    let lines = errs(&format!("{BASE}\n[frowards]\nx = 1\n"));
    has(
        &lines,
        "t.toml:18:2: frowards: unknown key `frowards`",
        "valid keys:",
    );
}

#[test]
fn unknown_enum_value() {
    let lines = errs(&with(
        "id = \"t1\"\n",
        "id = \"t1\"\nroles = [\"forwrd\"]\n",
    ));
    has(
        &lines,
        "t.toml:3:10: node.roles[0]: unknown value \"forwrd\"",
        "did you mean \"forward\"?",
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = BASE
        .replace("id = \"t1\"\n", "")
        .replace("device = \"net_tap1\"\n", "");
    let lines = errs(&text);
    has(&lines, "t.toml:1:1: node.id:", "required key is missing");
    has(
        &lines,
        "t.toml:10:1: port[1].device:",
        "required key is missing",
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
}

#[test]
fn missing_required_section() {
    let text = BASE.replace("[eal]\nfile_prefix = \"t1\"\n", "");
    let lines = errs(&text);
    assert_eq!(
        lines,
        vec!["t.toml:1:1: eal.file_prefix: required key is missing"]
    );
}

#[test]
fn bad_reference() {
    let lines = errs(&with(
        "pairs = [[\"a\", \"b\"]]",
        "pairs = [[\"a\", \"c\"]]",
    ));
    assert_eq!(
        lines,
        vec!["t.toml:16:16: forward.pairs[0][1]: no [[port]] or [[bond]] named \"c\""]
    );
}

#[test]
fn duplicate_name() {
    let lines = errs(&with("name = \"b\"", "name = \"a\""));
    has(
        &lines,
        "t.toml:12:8: port[1].name: duplicate port or bond name \"a\"",
        "port[0].name at line 8",
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let lines = errs(&with("id = \"t1\"\n", "id = \"t1\"\nid = \"t2\"\n"));
    has(&lines, "t.toml:3:", "node.id: TOML syntax error");
}

#[test]
fn a_port_in_two_pairs() {
    let text = format!(
        "{}[[port]]\nname = \"c\"\ndevice = \"net_tap2\"\n",
        with(
            "pairs = [[\"a\", \"b\"]]",
            "pairs = [[\"a\", \"b\"], [\"c\", \"a\"]]"
        )
    );
    let lines = errs(&text);
    has(
        &lines,
        "t.toml:16:28: forward.pairs[1][1]:",
        "already in a pair (forward.pairs[0][0])",
    );
}

#[test]
fn pair_of_the_wrong_length() {
    let lines = errs(&with(
        "pairs = [[\"a\", \"b\"]]",
        "pairs = [[\"a\", \"b\", \"c\"]]",
    ));
    has(&lines, "t.toml:16:10: forward.pairs[0]:", "has 3 elements");
}

#[test]
fn forward_role_and_section_go_together() {
    let no_section = BASE.split("[forward]").next().unwrap().to_owned();
    has(
        &errs(&no_section),
        "t.toml:",
        "the [forward] section is missing",
    );
    let no_role = with("id = \"t1\"\n", "id = \"t1\"\nroles = [\"tap\"]\n");
    let lines = errs(&no_role);
    has(
        &lines,
        "t.toml:16:1: forward:",
        "node.roles does not contain \"forward\"",
    );
    has(&lines, "t.toml:3:10: node.roles[0]:", "role \"tap\" needs");
}

// ---------------------------------------------------------------------------------------
// All problems at once

#[test]
fn all_problems_are_reported_in_file_order() {
    let text = r#"[node]
id = "bad id!"

[eal]
lcores = "0"
memory_mb = 32
file_prefix = "-x"

[[port]]
name = "a"
device = "03:00.0"
rx_queues = 65
addresses = ["10.0.0.1/24", "10.0.0.2"]

[[port]]
name = "b"
device = "net_virtio_user0"
rx_desc = 1000

[forward]
pairs = [["a", "z"]]
"#;
    let lines = errs(text);
    let expect = [
        ("t.toml:2:6: node.id:", "not a valid node id"),
        ("t.toml:5:10: eal.lcores:", "at least 2 lcores"),
        (
            "t.toml:6:13: eal.memory_mb:",
            "between 64 and 1048576 (got 32)",
        ),
        ("t.toml:7:15: eal.file_prefix:", "not a valid file prefix"),
        ("t.toml:11:10: port[0].device:", "\"0000:03:00.0\""),
        (
            "t.toml:12:13: port[0].rx_queues:",
            "between 1 and 64 (got 65)",
        ),
        (
            "t.toml:13:29: port[0].addresses[1]:",
            "needs a prefix length",
        ),
        ("t.toml:15:1: port[1].args:", "needs args = \"path="),
        ("t.toml:18:11: port[1].rx_desc:", "power of two"),
        ("t.toml:21:16: forward.pairs[0][1]:", "named \"z\""),
    ];
    for (prefix, needle) in expect {
        has(&lines, prefix, needle);
    }
    assert_eq!(lines.len(), expect.len(), "{}", lines.join("\n"));
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| {
        let mut it = l.split(':').skip(1).map(|n| n.parse::<usize>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    });
    assert_eq!(lines, sorted, "problems are in file order");
}

#[test]
fn several_type_errors_and_unknown_keys_are_all_reported() {
    let text = with(
        "name = \"b\"\n",
        "name = \"b\"\nmtu = \"x\"\nrx_qeues = 2\npromiscuous = 1\n",
    )
    .replace("[eal]\n", "[eal]\nhugepages = \"no\"\n");
    let lines = errs(&text);
    has(&lines, "t.toml:5:13: eal.hugepages:", "expected a boolean");
    has(&lines, "t.toml:14:7: port[1].mtu:", "wrong type");
    has(
        &lines,
        "t.toml:15:1: port[1].rx_qeues:",
        "did you mean `rx_queues`?",
    );
    has(
        &lines,
        "t.toml:16:15: port[1].promiscuous:",
        "expected a boolean",
    );
    assert_eq!(lines.len(), 4, "{}", lines.join("\n"));
}

#[test]
fn several_syntax_errors_are_all_reported() {
    let text = with(
        "file_prefix = \"t1\"",
        "file_prefix = \"t1\nmemory_mb = 1 2",
    );
    let lines = errs(&text);
    has(&lines, "t.toml:5:", "eal.file_prefix: TOML syntax error");
    has(&lines, "t.toml:6:", "eal.memory_mb: TOML syntax error");
    // The blanked file_prefix is not reported again as missing.
    assert_eq!(lines.len(), 2, "{}", lines.join("\n"));
}

#[test]
fn type_errors_do_not_repeat_as_semantic_errors() {
    // A required key of the wrong type is reported once, not again as "missing".
    let lines = errs(&with("id = \"t1\"", "id = 7"));
    assert_eq!(
        lines,
        vec!["t.toml:2:6: node.id: wrong type: expected a string, found integer `7`"]
    );
}

// ---------------------------------------------------------------------------------------
// Other rules

#[test]
fn load_reports_an_unreadable_file() {
    let e: ConfigErrors = config::load(Path::new("/nonexistent/rack.toml")).unwrap_err();
    assert_eq!(e.len(), 1);
    let line = e.to_string();
    assert!(
        line.starts_with("/nonexistent/rack.toml: cannot read"),
        "{line}"
    );
}

#[test]
fn load_names_the_file_as_given() {
    let dir = std::env::temp_dir().join(format!("tapsplice-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("x.toml");
    std::fs::write(
        &path,
        with("name = \"b\"\n", "name = \"b\"\nrx_queues = 0\n"),
    )
    .unwrap();
    let e = config::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:13:13: port[1].rx_queues: must be between 1 and 64 (got 0)",
            path.display()
        )
    );
}

#[test]
fn lcore_lists() {
    let cfg = ok(&with(
        "file_prefix = \"t1\"",
        "file_prefix = \"t1\"\nlcores = \"0-3\"",
    ));
    assert_eq!(cfg.main_lcore(), 0);
    assert_eq!(cfg.worker_lcores(), vec![1, 2, 3]);
    has(
        &errs(&with(
            "file_prefix = \"t1\"",
            "file_prefix = \"t1\"\nlcores = \"0,x\"",
        )),
        "t.toml:6:10: eal.lcores:",
        "not an lcore id",
    );
    has(
        &errs(&with(
            "file_prefix = \"t1\"",
            "file_prefix = \"t1\"\nlcores = \"1,1\"",
        )),
        "t.toml:6:10: eal.lcores:",
        "twice",
    );
}

#[test]
fn devices_and_vdev_arguments() {
    // net_tap may omit iface=; an unknown vdev driver is a warning, not an error.
    let cfg = ok(&with("device = \"net_tap1\"", "device = \"net_null0\""));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert!(cfg.warnings[0]
        .to_string()
        .starts_with("t.toml:13:10: port[1].device: warning: "));
    has(
        &errs(&with("device = \"net_tap1\"", "device = \"net_vhost0\"")),
        "t.toml:11:1: port[1].args:",
        "iface=",
    );
    has(
        &errs(&with("device = \"net_tap1\"", "device = \"eth1\"")),
        "t.toml:13:10: port[1].device:",
        "neither a PCI address",
    );
    has(
        &errs(&with("device = \"net_tap1\"", "device = \"0000:03:00.9\"")),
        "t.toml:13:10: port[1].device:",
        "DDDD:BB:DD.F",
    );
    has(
        &errs(&with(
            "device = \"net_tap1\"",
            "device = \"net_tap1\"\nargs = \"iface\"",
        )),
        "t.toml:14:8: port[1].args:",
        "key=value",
    );
    has(
        &errs(&with("device = \"net_tap1\"", "device = \"net_tap0\"")),
        "t.toml:13:10: port[1].device:",
        "duplicate device",
    );
}

#[test]
fn eal_rules() {
    has(
        &errs(&with(
            "file_prefix = \"t1\"",
            "file_prefix = \"t1\"\nextra_args = [\"--file-prefix=x\"]",
        )),
        "t.toml:6:15: eal.extra_args[0]:",
        "set eal.file_prefix instead",
    );
    has(
        &errs(&with(
            "file_prefix = \"t1\"",
            "file_prefix = \"t1\"\nhugepages = false\nextra_args = [\"--in-memory\"]",
        )),
        "t.toml:7:15: eal.extra_args[0]:",
        "--no-huge",
    );
    has(
        &errs(&with(
            "file_prefix = \"t1\"",
            "file_prefix = \"t1\"\npci_allow = [\"0000:3:00.0\"]",
        )),
        "t.toml:6:14: eal.pci_allow[0]:",
        "PCI address",
    );
}

#[test]
fn mempool_must_fill_the_rx_rings() {
    let text = format!("{BASE}[mempool]\nmbufs = 1023\n");
    has(
        &errs(&text),
        "t.toml:18:9: mempool.mbufs:",
        "cannot fill the RX rings",
    );
    let text = format!("{BASE}[mempool]\ndata_room = 1024\n");
    has(&errs(&text), "t.toml:", "needs mempool.data_room");
}

#[test]
fn bonds() {
    let text = format!(
        "{}[[port]]\nname = \"c\"\ndevice = \"net_tap2\"\n[[port]]\nname = \"d\"\ndevice = \"net_tap3\"\n[[bond]]\nname = \"up\"\nmode = \"active-backup\"\nmembers = [\"c\", \"d\"]\nprimary = \"d\"\n",
        with("pairs = [[\"a\", \"b\"]]", "pairs = [[\"a\", \"up\"]]")
    );
    let cfg = ok(&text);
    assert_eq!(cfg.bond_index("up"), Some(0));
    let args = cfg.eal_args("p");
    assert!(
        args.contains(
            &"net_bonding_up,mode=1,slave=net_tap2,slave=net_tap3,primary=net_tap3".to_string()
        ),
        "{args:?}"
    );

    // A member that does not exist, a member used in a pair, a bad mode.
    let bad = text.replace(
        "members = [\"c\", \"d\"]",
        "members = [\"c\", \"e\", \"a\"]",
    );
    let lines = errs(&bad);
    has(
        &lines,
        "t.toml:",
        "bond[0].members[1]: no [[port]] named \"e\"",
    );
    has(
        &lines,
        "t.toml:16:11: forward.pairs[0][0]:",
        "member of bond \"up\"",
    );
    has(
        &errs(&text.replace("active-backup", "lacp")),
        "t.toml:",
        "bond[0].mode: unknown value \"lacp\"",
    );
}

#[test]
fn later_roles_validate_their_references() {
    let text = std::fs::read_to_string(configs_dir().join("splice.toml")).unwrap();
    let bad = text
        .replace(
            "pool = \"static\"\n\n[[service.route]]",
            "pool = \"statik\"\n\n[[service.route]]",
        )
        .replace("members = [\"sp3\"]", "members = [\"sp9\"]");
    let lines = errs(&bad);
    has(
        &lines,
        "t.toml:",
        "service[0].route[0].pool: no [[pool]] named \"statik\"",
    );
    has(
        &lines,
        "t.toml:",
        "proxy_group[1].members[0]: no [[peer]] with id \"sp9\"",
    );

    let text = std::fs::read_to_string(configs_dir().join("tap.toml")).unwrap();
    let bad = text
        .replace("fence = \"ipmi-a\"", "fence = \"ipmi-z\"")
        .replace("[keys]\nrack_key = \"/etc/tapsplice/rack.key\"\n", "");
    let lines = errs(&bad);
    has(
        &lines,
        "t.toml:",
        "server[0].fence: no [[fence_device]] named \"ipmi-z\"",
    );
    has(&lines, "t.toml:", "keys.rack_key: peers are configured");

    let text = std::fs::read_to_string(configs_dir().join("balance.toml")).unwrap();
    let bad = text
        .replace("heartbeat_interval_ms = 10", "heartbeat_interval_ms = 2")
        .replace("id = \"px2\"", "id = \"px1\"");
    let lines = errs(&bad);
    has(
        &lines,
        "t.toml:",
        "timers.heartbeat_interval_ms: must be between 5 and 60000 (got 2)",
    );
    has(&lines, "t.toml:", "peer[1].id: duplicate peer id \"px1\"");
}

#[test]
fn in_band_heartbeats_need_an_ipv4_port_and_an_ipv4_peer() {
    let rack = |addresses: &str, peer: &str| {
        with("device = \"net_tap1\"\n", &format!("device = \"net_tap1\"\naddresses = [{addresses}]\n"))
            .replace("[node]\nid = \"t1\"", "[node]\nid = \"t1\"\nmgmt = \"127.0.0.1:7400\"")
            + &format!("\n[[peer]]\nid = \"p1\"\nclass = \"server\"\ninband_port = \"b\"\ninband_address = \"{peer}\"\n\n[keys]\nrack_key = \"/k\"\n")
    };
    ok(&rack("\"10.0.1.2/24\"", "10.0.1.9"));
    let lines = errs(&rack("\"fd00::2/64\"", "10.0.1.9"));
    has(&lines, "t.toml:", "has no IPv4 address");
    let lines = errs(&rack("\"10.0.1.2/24\"", "fd00::9"));
    has(&lines, "t.toml:", "in-band heartbeats are IPv4");
}

#[test]
fn least_connections_is_for_splice_pools_only() {
    let rack = |mode: &str| one_service_rack(mode, "0,1", "selection = \"least_connections\"\n", "", "");
    let c = ok(&rack("splice"));
    assert_eq!(c.pool[0].selection, config::PoolSelection::LeastConnections);
    let e = errs(&rack("balance"));
    has(&e, "t.toml:", "\"least_connections\" needs per-connection state");
    let e = errs(&rack("splice").replace("least_connections", "round_robin"));
    has(&e, "t.toml:", "unknown value \"round_robin\"");
}

#[test]
fn several_workers_split_the_nat_ports_and_refuse_transparent_splicing() {
    let rack = |lcores: &str, nat: &str, nat_ports: &str| one_service_rack("splice", lcores, "", &format!("nat = \"{nat}\"\n"), &format!("\n[splice]\nnat_ports = \"{nat_ports}\"\n"));
    // Two workers on one CPU each beside the main lcore: DPDK's --lcores form.
    let c = ok(&rack("0@0,1@0,2@1", "fullnat", "20000-20001"));
    assert_eq!(c.worker_lcores(), vec![1, 2]);
    let args = c.eal_args("p");
    assert!(args.windows(2).any(|w| w == ["--lcores", "0@0,1@0,2@1"]), "{args:?}");
    assert!(!args.contains(&"-l".to_string()));
    ok(&rack("0,1", "transparent", "20000-20000"));
    has(&errs(&rack("0-2", "fullnat", "20000-20000")), "t.toml:", "splice.nat_ports: 1 ports cannot be split between 2 worker lcores");
    has(&errs(&rack("0-2", "transparent", "20000-29999")), "t.toml:", "service[0].nat: transparent splicing needs one worker lcore");
    has(&errs(&rack("0,1-2@1", "fullnat", "20000-29999")), "t.toml:", "only a single lcore can name its CPU");
}

/// A rack with one TAP port, one pool and one service of `mode`: `lcores`, extra lines for
/// the pool and the service, and extra sections before `[keys]`.
fn one_service_rack(mode: &str, lcores: &str, pool: &str, service: &str, sections: &str) -> String {
    format!(
        r#"[node]
id = "t1"
roles = ["{mode}"]

[eal]
lcores = "{lcores}"
file_prefix = "t1"

[[port]]
name = "a"
device = "net_tap0"
addresses = ["10.0.0.2/24"]

[[pool]]
name = "p"
{pool}members = [{{ address = "10.0.0.21" }}]

[[service]]
name = "s"
vip = "10.0.0.100"
ports = [80]
mode = "{mode}"
pool = "p"
{service}{sections}
[keys]
syn_cookie_secret = "/etc/tapsplice/syncookie.key"
"#
    )
}

#[test]
fn a_splice_service_drops_or_resets_syns_without_a_backend() {
    let rack = |mode: &str, line: &str| one_service_rack(mode, "0,1", "", line, "");
    assert_eq!(ok(&rack("splice", "")).service[0].no_backend, config::NoBackend::Reset);
    assert_eq!(ok(&rack("splice", "no_backend = \"drop\"\n")).service[0].no_backend, config::NoBackend::Drop);
    has(&errs(&rack("splice", "no_backend = \"refuse\"\n")), "t.toml:", "unknown value \"refuse\"");
    let warned = config::parse(&rack("balance", "no_backend = \"reset\"\n"), "t.toml").expect("a warning, not an error");
    let shown: Vec<String> = warned.warnings.iter().map(|w| w.to_string()).collect();
    assert!(shown.iter().any(|w| w.contains("no_backend") && w.contains("ignored in mode \"balance\"")), "{shown:?}");
}

/// BASE with its second port (`net_tap1`) made `lines` (device, args, ...).
fn second_port(lines: &str) -> String {
    with("device = \"net_tap1\"\n", lines)
}

#[test]
fn socket_ports_need_their_interface_and_a_queue_pair_per_worker() {
    for (driver, args) in [("net_af_packet0", "iface=veth0,qdisc_bypass=1"), ("net_af_xdp0", "iface=veth0")] {
        let lines = errs(&second_port(&format!("device = \"{driver}\"\n")));
        has(&lines, "t.toml:11:1: port[1].args:", &format!("{driver} needs args = \"iface=<kernel interface>\""));
        let cfg = ok(&second_port(&format!("device = \"{driver}\"\nargs = \"{args}\"\n")));
        assert!(cfg.warnings.is_empty(), "a driver tapsplice is tested with: {:?}", cfg.warnings);
    }
    // Two workers need two TX queues: one queue pair by default is too few, and says so.
    let two_workers = with("file_prefix = \"t1\"\n", "file_prefix = \"t1\"\nlcores = \"0-2\"\n");
    let lines = errs(&two_workers.replacen("device = \"net_tap1\"\n", "device = \"net_af_xdp0\"\nargs = \"iface=veth0\"\n", 1));
    has(&lines, "t.toml:15:8: port[1].args:", "add queue_count=2");
    let lines = errs(&two_workers.replacen("device = \"net_tap1\"\n", "device = \"net_af_xdp0\"\nargs = \"iface=veth0,queue_count=1\"\n", 1));
    has(&lines, "t.toml:15:8: port[1].args:", "queue_count=1 does not match the queue pairs the port is given (2");
    ok(&two_workers.replacen("device = \"net_tap1\"\n", "device = \"net_af_xdp0\"\nargs = \"iface=veth0,queue_count=2\"\n", 1));
    // More than the port is given would leave sockets unread.
    let lines = errs(&second_port("device = \"net_af_xdp0\"\nargs = \"iface=veth0,queue_count=2\"\n"));
    has(&lines, "t.toml:14:8: port[1].args:", "queue_count=2 does not match the queue pairs the port is given (1");
    // The same rule for AF_PACKET's qpairs=, and for RX queues.
    let lines = errs(&second_port("device = \"net_af_packet0\"\nargs = \"iface=veth0,qpairs=1\"\nrx_queues = 2\n"));
    has(&lines, "t.toml:14:8: port[1].args:", "qpairs=1 does not match the queue pairs the port is given (2");
    ok(&second_port("device = \"net_af_packet0\"\nargs = \"iface=veth0,qpairs=2\"\nrx_queues = 2\n"));
    // `.` and `..` are no interface names.
    let lines = errs(&second_port("device = \"net_af_xdp0\"\nargs = \"iface=..\"\n"));
    has(&lines, "t.toml:14:8: port[1].args:", "is not a valid Linux interface name");
    let lines = errs(&second_port("device = \"net_af_xdp0\"\nargs = \"iface=veth0,queue_count=x\"\n"));
    has(&lines, "t.toml:14:8: port[1].args:", "queue_count= must be a number");
    // One kernel interface cannot back two ports.
    let lines = errs(&BASE.replacen("device = \"net_tap0\"\n", "device = \"net_af_xdp0\"\nargs = \"iface=veth0\"\n", 1).replacen("device = \"net_tap1\"\n", "device = \"net_af_packet1\"\nargs = \"iface=veth0\"\n", 1));
    assert!(lines.iter().any(|l| l.contains("interface name (iface=)")), "{lines:?}");
}

