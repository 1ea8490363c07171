import ArgumentParser
import FerrySandbox
import FerrySystem
import FerryTransport
import FerryVhost
import Glibc
import Logging

extension SandboxMode: ExpressibleByArgument {}
extension SeccompMode: ExpressibleByArgument {}

/// The sandbox, capability drop and seccomp filter of `ferry serve` (README "Sandbox, seccomp
/// and capabilities"), entered once set-up is done and before the first thread starts.
extension Serve {
    /// What the sandbox needs to know about the server being set up.
    struct SandboxSetting {
        /// SOURCE's root directory, open.
        var sourceFD: Int32
        /// The FUSE mount (nil for a VM, which has none).
        var mount: FUSEMount?
        /// A VM's server and the socket file it owns (nil: none, or a supervisor's).
        var vhost: VhostUserServer?
        var socketFile: String?
        var capabilities = CapabilityPlan.Features()
    }

    /// The sandbox mode to run: the one asked for, else namespace for root and none otherwise.
    /// An ordinary user cannot ask for one.
    func sandboxMode(root: Bool) throws(StartupError) -> SandboxMode {
        guard let sandbox else { return root ? .namespace : .none }
        if sandbox != .none && !root {
            throw StartupError("--sandbox \(sandbox.rawValue) needs root (new namespaces, chroot); an ordinary user's server runs with --sandbox none")
        }
        return sandbox
    }

    /// Enters the sandbox, drops capabilities and installs the seccomp filter; logs one line
    /// saying what runs. Returns the sandbox that runs (a default that cannot be set up falls
    /// back to none with a warning; an explicit one is a start-up error).
    func enterSandbox(_ setting: SandboxSetting, root: Bool, logger: Logger) throws(StartupError) -> SandboxMode {
        var mode = try sandboxMode(root: root)
        let explicit = sandbox != nil
        if mode != .none {
            do {
                // First, while nothing else has been started: the mount helper is then the
                // server's own child, in its namespace.
                if mode == .namespace { try PidNamespace.enter(forwarding: SignalWaiter.serverSignals) }
                try prepareHostSide(setting)
                try Sandbox.enter(mode, source: source, sourceFD: setting.sourceFD,
                                  hostMounts: setting.mount.map { [$0.mountpoint] } ?? [])
            } catch {
                if explicit { throw StartupError("--sandbox \(mode.rawValue) cannot be set up: \(error)") }
                logger.warning("sandbox \(mode.rawValue) cannot be set up here (\(error)); serving without a sandbox")
                mode = .none
            }
        }
        if mode == .none && seccomp != .none && (setting.mount.map { $0.helper == nil } ?? (setting.socketFile != nil)) {
            // Unsandboxed, the filter still has no mount calls nor unlink, and no_new_privs keeps
            // fusermount3 from running set-user-id: the unmount and the atime display on the
            // mount (mount_setattr), or a VM server's removal of its socket file at exit, go
            // through the host helper, as from a sandbox.
            do { try prepareHostSide(setting) } catch {
                throw StartupError("cannot start the host helper (needed under --seccomp \(seccomp.rawValue) without a sandbox): \(error)")
            }
        }
        var capabilities = "unchanged (not root)"
        if root {
            let plan = CapabilityPlan(setting.capabilities)
            do {
                capabilities = HostCapabilities.names(try Sandbox.limitCapabilities(to: plan.bits))
            } catch {
                throw StartupError(error.description)
            }
        }
        let allowed: Int
        do {
            allowed = try SeccompFilter.install(seccomp)
        } catch {
            throw StartupError("--seccomp \(seccomp.rawValue): \(error)")
        }
        let scope = mode == .namespace ? " (new mount, pid, ipc, uts and network namespaces; root is SOURCE)"
                   : mode == .chroot ? " (chroot into SOURCE)" : ""
        let filter = seccomp == .none ? "none" : "\(seccomp.rawValue) (\(allowed) system calls allowed)"
        logger.info("sandbox \(mode.rawValue)\(scope); seccomp \(filter); capabilities \(capabilities)")
        return mode
    }

    /// Opens, before the sandbox, what is used by path afterwards: for a FUSE mount /dev/fuse
    /// (reader clones), the connection's abort file and the helper that unmounts from the host;
    /// for a VM server the helper that removes its socket file at exit.
    private func prepareHostSide(_ setting: SandboxSetting) throws {
        var targets = HostHelper.Targets()
        if let mount = setting.mount {
            guard let connection = mount.connection else {
                throw SandboxError("the mount's connection number is unknown (/proc/self/mountinfo)")
            }
            (targets.mountpoint, targets.connection) = (mount.mountpoint, connection)
        }
        targets.socket = setting.socketFile
        guard !targets.arguments.isEmpty else { return }
        let helper = try HostHelper(executable: HostProcess.selfExecutable,
                                    arguments: ["ferry", "host-helper"] + targets.arguments)
        try setting.mount?.keepReachable(through: helper)
        setting.vhost?.removeSocketFile(through: helper)
    }
}

extension Serve {
    /// `--debug-forbidden-call` (tests): one call outside the allow-list, once serving.
    func makeForbiddenCall(logger: Logger) {
        logger.notice("debug: making a system call outside the seccomp allow-list (getpgrp)")
        SeccompFilter.makeForbiddenCall()
        logger.notice("debug: the forbidden system call returned")
    }
}
