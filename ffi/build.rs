//! Builds the DPDK shim as a shared object (linked against the system DPDK) and generates
//! bindings that load it at run time. Nothing in the final binary links DPDK directly, so
//! `tapsplice check`, `ctl` and `agent` run on hosts without DPDK, and `tapsplice run`
//! reports a missing DPDK in one clear line instead of a loader error.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const FUNCTIONS: &[&str] = &[
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_eal_remote_launch",
    "rte_eal_wait_lcore",
    "rte_eal_mp_wait_lcore",
    "rte_lcore_count",
    "rte_get_tsc_hz",
    "rte_socket_id",
    "rte_strerror",
    "rte_pktmbuf_pool_create",
    "rte_mempool_free",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
    "rte_eth_dev_count_avail",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_dev_info_get",
    "rte_eth_dev_configure",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_promiscuous_enable",
    "rte_eth_macaddr_get",
    "rte_eth_stats_get",
    "rte_eth_link_get_nowait",
    "rte_eth_dev_set_mtu",
    "rte_eth_dev_get_mtu",
    "rte_eth_dev_adjust_nb_rx_tx_desc",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_rss_hash_conf_get",
    "rte_eth_dev_rss_reta_query",
    "rte_log_set_global_level",
    "ts_.*",
];

const TYPES: &[&str] = &[
    "rte_mbuf",
    "rte_mempool",
    "rte_eth_stats",
    "rte_eth_dev_info",
    "rte_ether_addr",
    "rte_eth_conf",
    "rte_eth_link",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "rte_eth_rss_conf",
    "rte_eth_rss_reta_entry64",
    "rte_lcore_function_t",
    "ts_bond_member",
];

fn main() {
    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(false)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "DPDK development files not found ({e}); install them with \
                 `apt-get install libdpdk-dev pkg-config` (Debian 12 ships DPDK 22.11)"
            )
        });

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let so = out.join("libtapsplice_dpdk.so");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());

    // Only the libraries the shim's inline functions reference; EAL loads the PMDs itself.
    let libdirs = Command::new("pkg-config").args(["--libs-only-L", "libdpdk"]).output().expect("pkg-config runs");
    assert!(libdirs.status.success(), "pkg-config --libs-only-L libdpdk failed");
    let libdirs = String::from_utf8(libdirs.stdout).unwrap();
    let mut cmd = Command::new(&cc);
    cmd.args(["-O2", "-fPIC", "-shared", "-march=corei7", "-DALLOW_EXPERIMENTAL_API"])
        .args(["-include", "rte_config.h"])
        .arg("-o")
        .arg(&so)
        .arg("shim/shim.c");
    for inc in &dpdk.include_paths {
        cmd.arg(format!("-I{}", inc.display()));
    }
    cmd.args(libdirs.split_whitespace());
    cmd.args(["-lrte_net_bond", "-lrte_ethdev", "-lrte_mbuf", "-lrte_mempool", "-lrte_eal"]);
    let status = cmd.status().expect("the C compiler runs");
    assert!(status.success(), "building the DPDK shim failed: {cmd:?}");

    let mut builder = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(["-include", "rte_config.h", "-march=corei7", "-DALLOW_EXPERIMENTAL_API"])
        .clang_args(dpdk.include_paths.iter().map(|p| format!("-I{}", p.display())))
        .clang_arg("-Ishim")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .no_debug("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .dynamic_library_name("DpdkLib")
        .dynamic_link_require_all(true)
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_LOG_.*")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    builder
        .generate()
        .expect("bindgen over the DPDK headers")
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");

    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
}
