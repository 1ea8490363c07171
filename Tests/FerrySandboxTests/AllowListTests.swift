import CSeccomp
import FerrySandbox
import FerrySystem
import XCTest

/// The allow-list and the capability plan as data, without installing anything.
final class AllowListTests: XCTestCase {
    /// Every name is one libseccomp knows (a typo would fail at start-up, in every server).
    func testEveryNameResolves() {
        for group in SyscallAllowList.groups {
            XCTAssertFalse(group.reason.isEmpty)
            for name in group.names {
                XCTAssertNotEqual(seccomp_syscall_resolve_name(name), __NR_SCMP_ERROR, "\(name) (\(group.reason))")
            }
        }
    }

    /// No call is listed twice, and the calls that would undo the sandbox are not listed.
    func testNoDuplicatesAndNothingThatUndoesTheSandbox() {
        let names = SyscallAllowList.groups.flatMap(\.names) + SyscallAllowList.groups.flatMap { $0.numbered.map(\.name) }
        XCTAssertEqual(Set(names).count, names.count, "listed twice: \(names.filter { n in names.filter { $0 == n }.count > 1 })")
        for forbidden in ["execve", "execveat", "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "ptrace",
                          "capset", "clone", "clone3", "bpf", "init_module", "kexec_load", "reboot", "open_tree", "move_mount", "fsopen",
                          "personality", "getpgrp", "socket", "connect", "kill", "process_vm_writev"] {
            XCTAssertFalse(names.contains(forbidden), "\(forbidden) is allowed")
        }
    }

    /// clone is filtered by its flags (threads yes, namespaces no), not allowed outright.
    func testCloneFlagsForbidEveryNewNamespace() {
        let namespaces: [UInt64] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000]
        XCTAssertEqual(namespaces.reduce(0, |), SyscallAllowList.cloneForbiddenFlags)
        let pthreadFlags: UInt64 = 0x003d_0f00   // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
        XCTAssertEqual(pthreadFlags & SyscallAllowList.cloneForbiddenFlags, 0)
    }

    func testCapabilityPlans() {
        // A root /dev/fuse server: credential switching, file handles, passthrough.
        var features = CapabilityPlan.Features()
        features.passthrough = true
        XCTAssertEqual(CapabilityPlan(features).bits, 0x8820_02df)
        // Without passthrough or whole-file-system fanotify: no CAP_SYS_ADMIN.
        features.passthrough = false
        XCTAssertEqual(CapabilityPlan(features).bits, 0x8800_02df)
        features.fanotifyFilesystems = true
        XCTAssertEqual(CapabilityPlan(features).bits, 0x8820_02df)
        // No credential switching (not root): only what handles need.
        features = CapabilityPlan.Features()
        features.credentialSwitching = false
        XCTAssertEqual(CapabilityPlan(features).bits, Capability.dacReadSearch.bit)
        features.fileHandles = false
        XCTAssertEqual(CapabilityPlan(features).bits, 0)
        for entry in CapabilityPlan(CapabilityPlan.Features()).entries { XCTAssertFalse(entry.reason.isEmpty) }
        XCTAssertEqual(HostCapabilities.names(Capability.setuid.bit | 1 << 40), "CAP_SETUID, cap 40")
    }

    func testHelperArguments() {
        XCTAssertEqual(HostHelper.Targets(mountpoint: "/m", connection: 7).arguments, ["--mountpoint", "/m", "--connection", "7"])
        XCTAssertEqual(HostHelper.Targets(socket: "/s").arguments, ["--socket", "/s"])
        XCTAssertEqual(HostHelper.Targets().arguments, [])
    }
}
