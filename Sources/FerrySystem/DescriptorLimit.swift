import Glibc

/// RLIMIT_NOFILE, the number of descriptors Ferry may hold: open files of the guests, inodes
/// remembered by descriptor, and the O_PATH descriptors kept for hot file-handle inodes.
///
/// Raised once at start-up, as virtiofsd does: the soft limit to the hard one, and where the
/// process may (CAP_SYS_RESOURCE) both to the kernel's per-process maximum (fs.nr_open), at most
/// `ceiling`.
public enum DescriptorLimit {
    /// The most Ferry asks for: plenty for a guest's open files, and small enough that the
    /// descriptor table stays modest.
    public static let ceiling = 1 << 20

    /// The soft limit now.
    public static var current: Int {
        var limit = rlimit()
        return getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 1024
    }

    /// Raises the limit as far as allowed; returns the soft limit before and after.
    @discardableResult
    public static func raise() -> (before: Int, after: Int) {
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return (1024, 1024) }
        let before = Int(clamping: limit.rlim_cur)
        let wanted = rlim_t(min(kernelMaximum(), ceiling))
        if wanted > limit.rlim_max {
            var raised = rlimit(rlim_cur: wanted, rlim_max: wanted)
            if setrlimit(resource, &raised) == 0 { return (before, Int(wanted)) }   // else: not privileged
        }
        guard limit.rlim_cur < limit.rlim_max else { return (before, before) }
        var raised = rlimit(rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max)
        return setrlimit(resource, &raised) == 0 ? (before, Int(clamping: limit.rlim_max)) : (before, before)
    }

    /// Sets the soft and hard limit to `count` (virtiofsd's `--rlimit-nofile`); raising the
    /// hard limit needs CAP_SYS_RESOURCE (EPERM otherwise).
    public static func set(_ count: Int) throws(Errno) {
        var limit = rlimit(rlim_cur: rlim_t(count), rlim_max: rlim_t(count))
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 { throw Errno.current }
    }

    /// fs.nr_open: the largest RLIMIT_NOFILE the kernel allows (1,048,576 unless changed).
    public static func kernelMaximum() -> Int {
        let fd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ceiling }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return ceiling }
        let digits = bytes[0..<n].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        return Int(String(decoding: digits, as: UTF8.self)) ?? ceiling
    }
}
