import CFerrySys
import Glibc

/// The calls that move this process into a sandbox: new namespaces, a private mount tree, a
/// new root. Namespaces and the root belong to the calling thread and are inherited by threads
/// started later, so these run on the main thread before any other thread exists.
public enum HostNamespaces {
    /// Namespaces `unshare` can enter.
    public struct Kinds: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let mount = Kinds(rawValue: 0x0002_0000)     // CLONE_NEWNS
        public static let uts = Kinds(rawValue: 0x0400_0000)       // CLONE_NEWUTS
        public static let ipc = Kinds(rawValue: 0x0800_0000)       // CLONE_NEWIPC
        public static let network = Kinds(rawValue: 0x4000_0000)   // CLONE_NEWNET
        /// Moves no one: the next child forked is pid 1 of the new namespace.
        public static let pid = Kinds(rawValue: 0x2000_0000)       // CLONE_NEWPID
    }

    /// unshare(2): the calling thread leaves its namespaces of `kinds` for new ones.
    public static func unshare(_ kinds: Kinds) throws(Errno) {
        _ = try checked { ferry_unshare(kinds.rawValue) }
    }

    /// Makes every mount of this (new) mount namespace private, so nothing mounted or unmounted
    /// here reaches the host, and nothing the host does reaches here.
    public static func makeMountsPrivate() throws(Errno) {
        _ = try checked { Glibc.mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil) }
    }

    /// Bind-mounts `path` onto itself with everything mounted below it (so it is a mount root,
    /// which pivot_root needs).
    public static func bindOntoItself(_ path: String) throws(Errno) {
        _ = try checked { Glibc.mount(path, path, nil, UInt(MS_BIND | MS_REC), nil) }
    }

    /// Makes the working directory (a mount root) the root of this mount namespace and detaches
    /// the old root with everything mounted on it: pivot_root(".", ".") then umount2(".",
    /// MNT_DETACH), as virtiofsd does. Afterwards "/" is that directory and nothing else is
    /// reachable by path.
    public static func pivotIntoWorkingDirectory() throws(Errno) {
        _ = try checked { ferry_pivot_root(".", ".") }
        _ = try checked { Glibc.umount2(".", Int32(MNT_DETACH)) }
        _ = try checked { Glibc.chdir("/") }
    }

    /// chroot(2) into `path` and chdir to the new root.
    public static func changeRoot(_ path: String) throws(Errno) {
        _ = try checked { Glibc.chroot(path) }
        _ = try checked { Glibc.chdir("/") }
    }

    /// chdir(2).
    public static func changeDirectory(_ path: String) throws(Errno) {
        _ = try checked { Glibc.chdir(path) }
    }

    /// fchdir(2) (an O_PATH descriptor works too).
    public static func changeDirectory(fd: Int32) throws(Errno) {
        _ = try checked { Glibc.fchdir(fd) }
    }

    /// Threads of this process right now (entries of /proc/self/task); nil if /proc cannot be read.
    public static func threadCount() -> Int? {
        guard let dir = opendir("/proc/self/task") else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            if entry.pointee.d_name.0 != 0x2e { count += 1 }   // not "." or ".."
        }
        return count
    }
}
