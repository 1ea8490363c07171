import CFerrySys
import Glibc

/// Host file-system calls on descriptors and names, each a thin typed wrapper that throws `Errno`.
public enum Host {
    /// openat(2); always adds O_CLOEXEC.
    public static func openat(_ dir: Int32, _ name: CName, flags: Int32, mode: UInt32 = 0) throws(Errno) -> Int32 {
        try name.withCString { (path) throws(Errno) in
            try retrying { ferry_openat(dir, path, flags | HostFlags.oCloexec, mode_t(mode)) }
        }
    }

    /// Reopens an O_PATH descriptor as a real open file through /proc/self/fd, so the kernel
    /// checks the calling thread's credentials against the file.
    public static func reopen(_ fd: Int32, flags: Int32) throws(Errno) -> Int32 {
        let flags = (flags & ~HostFlags.oNoFollow) | HostFlags.oCloexec
        return try ProcSelfFD.with(fd) { (dir, link) throws(Errno) in try retrying { ferry_openat(dir, link, flags, 0) } }
    }

    /// openat2(2) with `resolve` restrictions (HostFlags.resolve*); always adds O_CLOEXEC.
    public static func openat2(_ dir: Int32, _ name: CName, flags: Int32, resolve: UInt64) throws(Errno) -> Int32 {
        try name.withCString { (path) throws(Errno) in
            try retrying { ferry_openat2(dir, path, flags | HostFlags.oCloexec, resolve) }
        }
    }

    /// The path the kernel shows for descriptor `fd` (readlink of /proc/self/fd/N): where it
    /// is reachable in this mount namespace, " (deleted)" appended once unlinked, and just "/"
    /// for a file opened by handle whose name the kernel does not know (a disconnected dentry).
    public static func path(of fd: Int32) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try ProcSelfFD.with(fd) { (dir, link) throws(Errno) in
            try retrying {
                buffer.withUnsafeMutableBytes { raw in
                    ferry_readlinkat(dir, link, raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
                }
            }
        }
        guard n < buffer.count else { throw Errno.nameTooLong }
        return Array(buffer[0..<n])
    }

    /// close(2), ignoring the result (Linux always releases the descriptor).
    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// statx(2) of `name` relative to `dir` (`.empty` with AT_EMPTY_PATH for the descriptor itself).
    public static func statx(_ dir: Int32, _ name: CName, flags: Int32, mask: UInt32) throws(Errno) -> ferry_statx {
        var result = ferry_statx()
        _ = try name.withCString { (path) throws(Errno) in
            try retrying { ferry_statx(dir, path, flags, mask, &result) }
        }
        return result
    }

    /// The link count of the inode behind `fd` (any descriptor, O_PATH too): 0 once it was
    /// deleted.
    public static func linkCount(_ fd: Int32) throws(Errno) -> UInt32 {
        var result = ferry_statx()
        _ = try retrying { ferry_statx(fd, "", HostFlags.atEmptyPath | HostFlags.atSymlinkNoFollow, HostFlags.statxNlink, &result) }
        return result.stx_nlink
    }

    /// fstatat(2) without following symlinks; `.empty` name means the descriptor itself.
    /// The canonical absolute path of `path` (realpath(3): symlinks, "." and ".." resolved), or
    /// nil when it does not resolve.
    public static func canonicalPath(_ path: String) -> String? {
        var real = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(path, &real) != nil else { return nil }
        return String(decoding: real.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func stat(_ dir: Int32, _ name: CName = .empty) throws(Errno) -> Glibc.stat {
        var result = Glibc.stat()
        let flags = HostFlags.atSymlinkNoFollow | (name.isEmpty ? HostFlags.atEmptyPath : 0)
        _ = try name.withCString { (path) throws(Errno) in try retrying { fstatat(dir, path, &result, flags) } }
        return result
    }

    /// readlinkat(2) of the symlink `fd` refers to (an O_PATH descriptor).
    public static func readlink(_ fd: Int32) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try retrying {
            buffer.withUnsafeMutableBytes { raw in
                readlinkat(fd, "", raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
            }
        }
        return Array(buffer[0..<n])
    }

    /// mkdirat(2).
    public static func mkdir(_ dir: Int32, _ name: CName, mode: UInt32) throws(Errno) {
        _ = try name.withCString { (p) throws(Errno) in try retrying { mkdirat(dir, p, mode_t(mode)) } }
    }

    /// mknodat(2).
    public static func mknod(_ dir: Int32, _ name: CName, mode: UInt32, device: UInt64) throws(Errno) {
        _ = try name.withCString { (p) throws(Errno) in try retrying { mknodat(dir, p, mode_t(mode), dev_t(device)) } }
    }

    /// symlinkat(2).
    public static func symlink(target: CName, _ dir: Int32, _ name: CName) throws(Errno) {
        _ = try target.withCString { (t) throws(Errno) in
            try name.withCString { (p) throws(Errno) in try retrying { symlinkat(t, dir, p) } }
        }
    }

    /// unlinkat(2); `directory` removes an empty directory.
    public static func unlink(_ dir: Int32, _ name: CName, directory: Bool) throws(Errno) {
        _ = try name.withCString { (p) throws(Errno) in
            try retrying { unlinkat(dir, p, directory ? HostFlags.atRemoveDir : 0) }
        }
    }

    /// renameat2(2).
    public static func rename(_ oldDir: Int32, _ oldName: CName, _ newDir: Int32, _ newName: CName, flags: UInt32) throws(Errno) {
        _ = try oldName.withCString { (o) throws(Errno) in
            try newName.withCString { (n) throws(Errno) in try retrying { ferry_renameat2(oldDir, o, newDir, n, flags) } }
        }
    }

    /// Hard-links the file an O_PATH descriptor refers to as `name` in `dir` (linkat through
    /// /proc/self/fd, which needs no CAP_DAC_READ_SEARCH and works for O_TMPFILE files).
    public static func link(_ fd: Int32, _ dir: Int32, _ name: CName) throws(Errno) {
        _ = try ProcSelfFD.with(fd) { (procDir, source) throws(Errno) in
            try name.withCString { (p) throws(Errno) in
                try retrying { linkat(procDir, source, dir, p, HostFlags.atSymlinkFollow) }
            }
        }
    }

    /// chmod of the file behind an O_PATH descriptor (via /proc/self/fd).
    public static func chmod(pathFD fd: Int32, mode: UInt32) throws(Errno) {
        _ = try ProcSelfFD.with(fd) { (dir, link) throws(Errno) in try retrying { ferry_fchmodat(dir, link, mode_t(mode)) } }
    }

    /// fchmod(2) on an open file.
    public static func fchmod(_ fd: Int32, mode: UInt32) throws(Errno) {
        _ = try retrying { Glibc.fchmod(fd, mode_t(mode)) }
    }

    /// fchownat(2) with AT_EMPTY_PATH (works on O_PATH descriptors); -1 leaves an id unchanged.
    public static func chown(_ fd: Int32, uid: UInt32, gid: UInt32) throws(Errno) {
        _ = try retrying { fchownat(fd, "", uid, gid, HostFlags.atEmptyPath | HostFlags.atSymlinkNoFollow) }
    }

    /// utimensat(2) with AT_EMPTY_PATH on an O_PATH descriptor.
    public static func setTimes(_ fd: Int32, access: timespec, modification: timespec) throws(Errno) {
        var times = (access, modification)
        _ = try withUnsafePointer(to: &times) { (ptr) throws(Errno) in
            try ptr.withMemoryRebound(to: timespec.self, capacity: 2) { (t) throws(Errno) in
                try retrying { utimensat(fd, "", t, HostFlags.atEmptyPath | HostFlags.atSymlinkNoFollow) }
            }
        }
    }

    /// Whether `fd` was opened for writing (O_WRONLY or O_RDWR).
    public static func isOpenForWriting(_ fd: Int32) -> Bool {
        let flags = fcntl(fd, F_GETFL)
        return flags >= 0 && (flags & O_ACCMODE) != O_RDONLY
    }

    /// ftruncate(2).
    public static func truncate(_ fd: Int32, size: Int64) throws(Errno) {
        _ = try retrying { ftruncate(fd, off_t(size)) }
    }

    /// faccessat2(2) with the thread's effective (fs) credentials, on the descriptor itself.
    public static func access(_ fd: Int32, mask: Int32) throws(Errno) {
        _ = try retrying { faccessat(fd, "", mask, HostFlags.atEAccess | HostFlags.atEmptyPath) }
    }

    /// fstatfs(2).
    public static func statfs(_ fd: Int32) throws(Errno) -> CFerrySys.statfs {
        var result = CFerrySys.statfs()
        _ = try retrying { fstatfs(fd, &result) }
        return result
    }

    /// syncfs(2).
    public static func syncfs(_ fd: Int32) throws(Errno) {
        _ = try retrying { ferry_syncfs(fd) }
    }

    /// getdents64(2) into `buffer`; returns the bytes filled (0 at the end of the directory).
    public static func getdents(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try retrying { ferry_getdents64(fd, buffer.baseAddress, buffer.count) }
    }

    /// umask(2) for the calling thread (threads that called `unshareFilesystemContext`).
    @discardableResult
    public static func setUmask(_ mask: UInt32) -> UInt32 { UInt32(umask(mode_t(mask))) }
}
