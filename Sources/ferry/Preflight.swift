import FerrySystem
import Glibc

/// Checks made before mounting, each failing with a one-line message that names the problem.
enum Preflight {
    static func check(source: String, mountpoint: String) throws {
        var st = Glibc.stat()
        if stat(source, &st) != 0 {
            throw StartupError("source \(source): \(Errno.current)")
        }
        if st.st_mode & S_IFMT != S_IFDIR { throw StartupError("source \(source) is not a directory") }
        // statvfs always asks a FUSE server (stat of a mount root may be answered from attributes
        // the kernel still caches), so it tells a dead FUSE mount at once.
        var fs = statvfs()
        if stat(mountpoint, &st) != 0 || statvfs(mountpoint, &fs) != 0 {
            let error = Errno.current
            if error.rawValue == ENOTCONN {
                throw StartupError("mountpoint \(mountpoint) is a dead FUSE mount (server gone); clean up with `fusermount3 -u \(mountpoint)` or `umount -l \(mountpoint)`")
            }
            throw StartupError("mountpoint \(mountpoint): \(error)")
        }
        if st.st_mode & S_IFMT != S_IFDIR { throw StartupError("mountpoint \(mountpoint) is not a directory") }
        if let realSource = resolved(source), let realMount = resolved(mountpoint),
           realMount == realSource || realMount.hasPrefix(realSource.hasSuffix("/") ? realSource : realSource + "/") {
            throw StartupError("mountpoint \(mountpoint) is inside source \(source): the share would contain itself")
        }
        if isMountPoint(mountpoint, device: st.st_dev) {
            throw StartupError("mountpoint \(mountpoint) is busy: something is already mounted there")
        }
        let fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        if fuse < 0 { throw StartupError("cannot open /dev/fuse: \(Errno.current)") }
        close(fuse)
        if geteuid() != 0 && access("/usr/bin/fusermount3", X_OK) != 0 && access("/bin/fusermount3", X_OK) != 0 {
            throw StartupError("fusermount3 not found: ordinary users need it to mount (Debian: apt-get install fuse3)")
        }
    }

    /// Whether `path` is the root of a mount (its device differs from its parent's, or it is
    /// listed as a mount point).
    static func isMountPoint(_ path: String, device: UInt) -> Bool {
        var parent = Glibc.stat()
        if stat(path + "/..", &parent) == 0, parent.st_dev != device { return true }
        guard let real = resolved(path) else { return false }
        return MountTable.entries().contains { $0.mountpoint == real }
    }

    /// The canonical absolute path (realpath), or nil.
    static func resolved(_ path: String) -> String? { Host.canonicalPath(path) }

    /// Escapes a value for libfuse's comma-separated -o list (backslash before "," and "\\").
    static func escapeOption(_ value: String) -> String {
        var escaped = ""
        for character in value {
            if character == "," || character == "\\" { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }
}
