import CFerrySys
import Glibc

/// The FUSE passthrough ioctls on a /dev/fuse descriptor (ABI 7.40, Linux 6.9): a server
/// registers a host file as the backing file of files it opens with FOPEN_PASSTHROUGH, and the
/// kernel then reads, writes and maps that host file itself. protocol/fuse-abi.md.
public enum FUSEBackingDevice {
    /// FUSE_DEV_IOC_BACKING_OPEN: registers `file` (an open regular file) on the connection of
    /// `device`; returns the backing id (> 0). The kernel keeps the calling thread's credentials
    /// with it and does the passthrough I/O with them. Needs CAP_SYS_ADMIN in the initial user
    /// namespace (EPERM otherwise); ELOOP when `file` lies on a stacked file system (overlayfs,
    /// another passthrough FUSE mount) deeper than INIT's max_stack_depth allows.
    public static func open(device: Int32, file: Int32) throws(Errno) -> Int32 {
        try retrying { ferry_fuse_backing_open(device, file) }
    }

    /// FUSE_DEV_IOC_BACKING_CLOSE: forgets backing id `id`. Files the kernel already opened
    /// with it keep their own reference to the host file.
    public static func close(device: Int32, id: Int32) throws(Errno) {
        _ = try retrying { ferry_fuse_backing_close(device, id) }
    }

    /// Whether this process may register backing files: CAP_SYS_ADMIN in its effective set
    /// (/proc/self/status) and the initial user namespace (a namespaced root's capability does
    /// not count). Returns nil, or why not.
    public static func whyNotPrivileged() -> String? {
        guard let status = smallFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let caps = UInt64(line.dropFirst("CapEff:".count).filter { $0 != "\t" && $0 != " " }, radix: 16)
        else { return "cannot read the process's capabilities from /proc/self/status" }
        let capSysAdmin: UInt64 = 1 << 21
        guard caps & capSysAdmin != 0 else { return "the server lacks CAP_SYS_ADMIN" }
        // The initial user namespace has the fixed inode PROC_USER_INIT_INO (0xEFFFFFFD).
        var link = [CChar](repeating: 0, count: 64)
        let n = Glibc.readlink("/proc/self/ns/user", &link, link.count - 1)
        if n > 0 {
            let name = String(decoding: link[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if name != "user:[4026531837]" { return "the server runs in a user namespace (\(name)), where CAP_SYS_ADMIN does not count" }
        }
        return nil
    }

    private static func smallFile(_ path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8192)
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n <= 0 { break }
            filled += n
        }
        return String(decoding: bytes[0..<filled], as: UTF8.self)
    }
}
