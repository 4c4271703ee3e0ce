//! Checks made before DPDK starts, so that the common mistakes get one clear line that
//! names the cause and the fix instead of an EAL abort.

use std::path::Path;

/// What the preflight needs to know about one port.
pub struct PortNeed<'a> {
    pub name: &'a str,
    pub device: &'a str,
    pub is_pci: bool,
    /// The kernel interface a socket port (net_af_packet, net_af_xdp) reads.
    pub kernel_iface: Option<&'a str>,
}

/// Runs every check; returns the first problem as one line.
pub fn check(file_prefix: &str, hugepages: bool, memory_mb: u32, ports: &[PortNeed<'_>]) -> Result<(), String> {
    check_root()?;
    for p in ports {
        if p.device.starts_with("net_tap") || p.device.starts_with("net_tun") {
            check_tun(p.name)?;
        }
        if p.is_pci {
            check_pci(p.name, p.device)?;
        }
        if let Some(iface) = p.kernel_iface {
            check_kernel_iface(p.name, p.device, iface)?;
        }
    }
    check_prefix_free(file_prefix)?;
    if hugepages {
        check_hugepages(memory_mb)?;
    }
    Ok(())
}

fn check_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("tapsplice run needs root (DPDK maps device memory, creates TAP interfaces and locks /var/run/dpdk); run it as root or with sudo".into());
    }
    Ok(())
}

fn check_tun(port: &str) -> Result<(), String> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun") {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "port '{port}' is a net_tap device but /dev/net/tun cannot be opened ({e}); load the tun module with `modprobe tun` (and in a container, pass /dev/net/tun through)"
        )),
    }
}

fn check_kernel_iface(port: &str, dev: &str, iface: &str) -> Result<(), String> {
    // Asked of the kernel, not of /sys/class/net (which shows the namespace sysfs was
    // mounted in, not necessarily ours).
    if crate::links::in_our_namespace(iface) {
        return Ok(());
    }
    Err(format!("port '{port}' ({dev}) reads kernel interface '{iface}' (iface=), which does not exist in this network namespace; create it (a NIC's name, or one end of a veth pair) or fix iface="))
}

fn check_pci(port: &str, dev: &str) -> Result<(), String> {
    // The configuration only accepts full `DDDD:BB:DD.F` addresses.
    let full = dev.split(',').next().unwrap_or(dev);
    let sys = Path::new("/sys/bus/pci/devices").join(full);
    if !sys.exists() {
        return Err(format!("port '{port}': PCI device {full} does not exist on this host; check the address with `lspci -D`"));
    }
    let driver = std::fs::read_link(sys.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    match driver.as_deref() {
        Some("vfio-pci") | Some("uio_pci_generic") | Some("igb_uio") | Some("mlx5_core") | Some("mlx4_core") => Ok(()),
        Some(other) => Err(format!(
            "port '{port}': PCI device {full} is bound to the kernel driver '{other}', not vfio-pci; bind it with `dpdk-devbind.py -b vfio-pci {full}` (after `modprobe vfio-pci`)"
        )),
        None => Err(format!(
            "port '{port}': PCI device {full} has no driver; bind it with `modprobe vfio-pci && dpdk-devbind.py -b vfio-pci {full}`"
        )),
    }
}

/// EAL's primary process holds a write lock on `/var/run/dpdk/<prefix>/config`.
fn check_prefix_free(prefix: &str) -> Result<(), String> {
    let path = Path::new("/var/run/dpdk").join(prefix).join("config");
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else {
        return Ok(()); // no runtime directory: nobody uses the prefix
    };
    use std::os::fd::AsRawFd;
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    // F_GETLK reports a conflicting lock held by another process without taking one.
    // SAFETY: valid fd and flock struct.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    if rc == 0 && lock.l_type != libc::F_UNLCK as i16 {
        return Err(format!(
            "another DPDK process (pid {}) is running with file prefix '{prefix}'; give every appliance on a host its own eal.file_prefix, or stop the other one",
            lock.l_pid
        ));
    }
    Ok(())
}

fn check_hugepages(memory_mb: u32) -> Result<(), String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let free_mb = field("HugePages_Free:") * field("Hugepagesize:") / 1024;
    if free_mb < memory_mb as u64 {
        return Err(format!(
            "eal.hugepages = true but only {free_mb} MB of hugepages are free (eal.memory_mb = {memory_mb}); reserve more (e.g. `echo {} > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`) or set eal.hugepages = false",
            (memory_mb as u64).div_ceil(2) + 64
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_prefix_passes() {
        assert!(check_prefix_free("tapsplice-never-used-prefix-xyz").is_ok());
    }

    #[test]
    fn a_missing_kernel_interface_is_named() {
        let e = check_kernel_iface("west", "net_af_xdp0", "nosuchif0").unwrap_err();
        assert!(e.contains("'nosuchif0'") && e.contains("west") && e.contains("does not exist"), "{e}");
        assert!(check_kernel_iface("west", "net_af_xdp0", "lo").is_ok());
    }

    #[test]
    fn a_missing_pci_device_is_named() {
        let e = check_pci("west", "0000:7f:1f.7").unwrap_err();
        assert!(e.contains("does not exist") && e.contains("west"), "{e}");
    }
}
