import CFerrySys
import Glibc

/// The file-system identity of one OS thread: fsuid, fsgid and supplementary groups, switched
/// with per-thread raw syscalls so the host kernel checks each request as its caller.
///
/// Owned by a single thread and never shared. When Ferry does not run as root, switching is
/// off and every request runs with Ferry's own identity.
public final class ThreadCredentials {
    /// Whether this thread switches identities at all (only when Ferry runs as root).
    public let switching: Bool
    private var uid: UInt32 = 0
    private var gid: UInt32 = 0
    private var groups: [UInt32] = []
    private var umask: UInt32 = 0o777_777   // unknown until the first setUmask
    /// Called just before the identity changes (in `become` and `asRoot`): the thread's I/O
    /// engine hands the kernel what it queued, while the identity those operations were made
    /// under is still in force. io_uring takes the submitting thread's credentials, and the
    /// host clears a file's set-id bits on a write or fallocate only when they lack CAP_FSETID.
    public var willChange: (() -> Void)?

    /// Creates the state for the calling thread; `switching` is typically `geteuid() == 0`.
    public init(switching: Bool) {
        self.switching = switching
    }

    /// Becomes `uid`/`gid` with `groups` for the file-system calls that follow.
    public func become(uid: UInt32, gid: UInt32, groups: [UInt32]) {
        guard switching else { return }
        if uid == self.uid && gid == self.gid && groups == self.groups { return }
        willChange?()
        if groups != self.groups {
            _ = groups.withUnsafeBufferPointer { ferry_thread_setgroups($0.count, $0.baseAddress) }
        }
        _ = ferry_thread_setfsgid(gid)
        _ = ferry_thread_setfsuid(uid)
        self.uid = uid; self.gid = gid; self.groups = groups
    }

    /// Sets the thread's umask (the thread must have called `unshareFilesystemContext`).
    public func setUmask(_ mask: UInt32) {
        guard mask != umask else { return }
        Host.setUmask(mask)
        umask = mask
    }

    /// Returns to root (Ferry's own identity).
    public func becomeRoot() { become(uid: 0, gid: 0, groups: []) }

    /// Runs `body` as root, then switches back (for calls that need Ferry's privileges, such as
    /// open_by_handle_at, in the middle of a request).
    public func asRoot<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        guard switching, uid != 0 || gid != 0 else { return try body() }
        willChange?()
        _ = ferry_thread_setfsuid(0)
        _ = ferry_thread_setfsgid(0)
        defer {
            willChange?()
            _ = ferry_thread_setfsgid(gid)
            _ = ferry_thread_setfsuid(uid)
        }
        return try body()
    }

    /// The supplementary groups of thread `tid`, from /proc/TID/status, or nil if it is gone
    /// or not visible (another pid namespace). Request threads go through `CallerGroups`.
    public static func supplementaryGroups(ofThread tid: UInt32) -> [UInt32]? {
        let fd = ProcRoot.open("\(tid)/status")
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        // The Groups line comes early (after Name, Umask, State, the ids and FDSize), but a
        // caller may have thousands of groups: read until it ended, or the file did.
        var buffer = [UInt8](repeating: 0, count: 4096)
        var filled = 0
        while true {
            if filled == buffer.count { buffer.append(contentsOf: repeatElement(0, count: buffer.count)) }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n <= 0 { break }
            filled += n
            if let groups = parseGroups(buffer[0..<filled], complete: false) { return groups }
        }
        return parseGroups(buffer[0..<filled], complete: true)
    }

    /// The numbers of the "Groups:" line of a /proc status text; nil if the line is missing,
    /// or (unless `complete`) not yet ended by a newline.
    public static func parseGroups(_ text: ArraySlice<UInt8>, complete: Bool) -> [UInt32]? {
        let key: [UInt8] = Array("\nGroups:".utf8)
        var start: Int? = nil
        var i = text.startIndex
        while i + key.count <= text.endIndex {
            if text[i] == 0x0a && text[i + 1] == 0x47 /* G */ && text[i..<(i + key.count)].elementsEqual(key) {
                start = i + key.count
                break
            }
            i += 1
        }
        guard let start else { return nil }
        var groups: [UInt32] = []
        var value: UInt32 = 0, inNumber = false, ended = false
        for byte in text[start...] {
            if byte == UInt8(ascii: "\n") { ended = true; break }
            if byte >= 48 && byte <= 57 {
                value = value &* 10 &+ UInt32(byte - 48); inNumber = true
            } else if inNumber {
                groups.append(value); value = 0; inNumber = false
            }
        }
        guard ended || complete else { return nil }
        if inNumber { groups.append(value) }
        return groups
    }

    /// Gives the calling thread its own umask and working directory (unshare(CLONE_FS)), so a
    /// request's umask can be applied without affecting other threads.
    public static func unshareFilesystemContext() throws(Errno) {
        _ = try checked { ferry_thread_unshare_fs() }
    }
}
