//! The BPF edge, as root: the verifier's refusal reaches the caller with its log, and the pins
//! of a policy whose cgroup was removed do not outlive it.

use keepalive::bpf::insn::{Asm, R0, R1};
use keepalive::bpf::programs;
use keepalive::bpf::sys;
use keepalive::cgroup::Cgroup;
use keepalive::cgroup::policy;
use keepalive::policy::{Policy, Settings};

#[test]
fn a_refused_program_comes_back_with_the_verifiers_log() {
    testkit::require_root();
    // Returns r1 + r0 before r0 was ever written: the verifier refuses to read it.
    let mut a = Asm::new();
    a.add_imm(R1, 0).mov(R0, R0).exit();
    let e = sys::prog_load(
        programs::PROG_TYPE_SOCK_OPS,
        programs::ATTACH_SOCK_OPS,
        "ka_test_bad",
        &a.finish(),
    )
    .unwrap_err();
    assert!(e.log.contains("R0 !read_ok"), "log: {}", e.log);
}

#[test]
fn the_pins_of_a_removed_cgroup_are_pruned() {
    testkit::require_root();
    let mount = keepalive::cgroup::mount_point().unwrap();
    let make = |n: u32| {
        let path = mount.join(format!("ka-t{}-bpf{n}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        Cleanup(Cgroup::open(&path).unwrap())
    };
    let (gone, kept) = (make(0), make(1));
    let (gone, kept) = (&gone.0, &kept.0);
    let p: Policy = "idle=29".parse().unwrap();
    policy::set(gone, &p, true, &Settings::LINUX_DEFAULT, false).unwrap();
    std::fs::remove_dir(&gone.path).unwrap();
    // The kernel detaches the links of a removed cgroup from a work queue, soon after.
    let link = sys::pinned(&policy::pin_dir(gone.id).join("sock_ops")).unwrap();
    testkit::wait_for(
        "the removed cgroup's link to detach",
        std::time::Duration::from_secs(10),
        || {
            let info = sys::link_info(std::os::fd::AsFd::as_fd(&link)).unwrap();
            (info.cgroup_id == 0).then_some(())
        },
    );
    drop(link);
    // Any later set or unset sweeps the pins whose cgroup is gone.
    policy::set(kept, &p, false, &Settings::LINUX_DEFAULT, false).unwrap();
    assert!(!policy::pin_dir(gone.id).exists(), "stale pins left");
    policy::unset(kept).unwrap();
    assert!(!policy::pin_dir(kept.id).exists());
}

/// Removes a test cgroup and its policy, also when the test fails.
struct Cleanup(Cgroup);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = policy::unset(&self.0);
        let _ = std::fs::remove_dir(&self.0.path);
    }
}
