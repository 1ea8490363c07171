import FerrySystem
import Glibc

/// The options `ferry serve` mounts with (libfuse's `-o` list).
enum MountOptions {
    /// `source` names the mount in /proc/mounts; `sourceFlags` are SOURCE's own file system's
    /// statfs flags, which root mounts copy, so device nodes, set-id programs and exec behave
    /// through the mount as they do on SOURCE (fusermount3 forbids `dev`/`suid` to users, whose
    /// mounts stay nodev,nosuid). `noSuid`, `noDev` and `noExec` (the -o options) restrict
    /// further: the kernel then refuses set-id bits, device nodes and exec on the mount itself.
    static func list(source: String, sourceFlags: Int, root: Bool, allowOther: Bool, readonly: Bool,
                     noSuid: Bool = false, noDev: Bool = false, noExec: Bool = false,
                     sync: Bool = false, dirSync: Bool = false) -> [String] {
        // default_permissions: the kernel checks permissions (directory search included) before
        // using anything it caches; without it a cached name is reachable by any caller.
        var options = ["fsname=\(Preflight.escapeOption(source))", "subtype=ferry", "default_permissions"]
        if allowOther { options.append("allow_other") }
        if readonly { options.append("ro") }
        if root {
            // libfuse mounts nodev,nosuid unless told "dev"/"suid".
            if !noDev && sourceFlags & HostFlags.stNoDev == 0 { options.append("dev") }
            if !noSuid && sourceFlags & HostFlags.stNoSuid == 0 { options.append("suid") }
        }
        if noExec || sourceFlags & HostFlags.stNoExec != 0 { options.append("noexec") }
        if sync { options.append("sync") }
        if dirSync { options.append("dirsync") }
        return options
    }
}
