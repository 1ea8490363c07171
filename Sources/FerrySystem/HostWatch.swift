import CFerrySys
import Glibc

/// fanotify(7): a notification group that reports changes anywhere on a file system, with
/// file handles (FID) of the changed object and of its directory plus the entry name.
public enum Fanotify {
    // Event bits (linux/fanotify.h).
    public static let modify: UInt64 = 0x2
    public static let attrib: UInt64 = 0x4
    public static let closeWrite: UInt64 = 0x8
    public static let movedFrom: UInt64 = 0x40
    public static let movedTo: UInt64 = 0x80
    public static let create: UInt64 = 0x100
    public static let delete: UInt64 = 0x200
    public static let queueOverflow: UInt64 = 0x4000
    public static let onDirectory: UInt64 = 0x4000_0000

    // fanotify_init flags.
    static let cloexec: UInt32 = 0x1
    static let nonblock: UInt32 = 0x2
    static let classNotification: UInt32 = 0x0
    static let reportFID: UInt32 = 0x200
    static let reportDirFID: UInt32 = 0x400
    static let reportName: UInt32 = 0x800
    static let reportTargetFID: UInt32 = 0x1000

    public static let eventOnChild: UInt64 = 0x0800_0000

    // fanotify_mark flags.
    static let markAdd: UInt32 = 0x1
    static let markRemove: UInt32 = 0x2
    static let markIgnoredMask: UInt32 = 0x20
    static let markIgnoredSurvivesModify: UInt32 = 0x40
    static let markOnlyDirectory: UInt32 = 0x8
    static let markFilesystem: UInt32 = 0x100
    static let markEvictable: UInt32 = 0x200

    /// A notification-class group reporting the changed object's FID, the directory FID and
    /// the name, and for entry events the entry's target FID (FAN_REPORT_DFID_NAME_TARGET).
    /// Unprivileged groups may only mark inodes, and see other processes' pids as 0.
    public static func openGroup() throws(Errno) -> OwnedFD {
        let flags = cloexec | nonblock | classNotification | reportFID | reportDirFID | reportName | reportTargetFID
        let fd = try checked { ferry_fanotify_init(flags, UInt32(O_RDONLY | O_CLOEXEC)) }
        return OwnedFD(fd)
    }

    /// Watches the whole file system that `directory` (a readable descriptor) is on for the
    /// events in `mask`. EXDEV or ENODEV where the file system cannot report file handles.
    public static func markFilesystem(group: OwnedFD, directory: Int32, mask: UInt64) throws(Errno) {
        _ = try checked { ferry_fanotify_mark(group.rawValue, markAdd | markFilesystem, mask, directory, nil) }
    }

    /// Watches the whole file system of the file open as `fd` (any descriptor, O_PATH included,
    /// reached through /proc/self/fd).
    public static func markFilesystem(group: OwnedFD, anyDescriptor fd: Int32, mask: UInt64) throws(Errno) {
        _ = try ProcSelfFD.with(fd) { (dir, link) throws(Errno) in
            try checked { ferry_fanotify_mark(group.rawValue, markAdd | markFilesystem, mask, dir, link) }
        }
    }

    /// Watches one directory open as `fd` (any descriptor, reached through /proc/self/fd) for
    /// the events in `mask`, on itself and on its entries (FAN_EVENT_ON_CHILD). The mark is
    /// evictable: it goes away with the inode once nothing holds the directory. Allowed
    /// without privileges (Linux 5.13).
    public static func markDirectory(group: OwnedFD, anyDescriptor fd: Int32, mask: UInt64) throws(Errno) {
        let flags = markAdd | markEvictable | markOnlyDirectory
        _ = try ProcSelfFD.with(fd) { (dir, link) throws(Errno) in
            try checked { ferry_fanotify_mark(group.rawValue, flags, mask | eventOnChild, dir, link) }
        }
    }

    /// Ignores (`on`) or again reports the events in `mask` on the one inode open as `fd` (any
    /// descriptor, reached through /proc/self/fd), whatever other mark reports them: an
    /// ignored mask on an inode mark that survives the inode's modification.
    public static func ignore(group: OwnedFD, anyDescriptor fd: Int32, mask: UInt64, on: Bool) throws(Errno) {
        let flags = on ? markAdd | markIgnoredMask | markIgnoredSurvivesModify : markRemove | markIgnoredMask
        _ = try ProcSelfFD.with(fd) { (dir, link) throws(Errno) in
            try checked { ferry_fanotify_mark(group.rawValue, flags, mask, dir, link) }
        }
    }

    /// The file-system id fanotify reports events with (statfs's f_fsid, both words).
    public static func filesystemID(of fd: Int32) throws(Errno) -> UInt64 {
        let result = try Host.statfs(fd)
        return withUnsafeBytes(of: result.f_fsid) { raw in
            UInt64(raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
                | UInt64(raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) << 32
        }
    }
}

/// inotify(7): per-directory watches that report changes to the directory and its entries by
/// name. The fallback where fanotify is refused (an unprivileged server).
public enum Inotify {
    public static let modify: UInt32 = 0x2
    public static let attrib: UInt32 = 0x4
    public static let closeWrite: UInt32 = 0x8
    public static let movedFrom: UInt32 = 0x40
    public static let movedTo: UInt32 = 0x80
    public static let create: UInt32 = 0x100
    public static let delete: UInt32 = 0x200
    public static let queueOverflow: UInt32 = 0x4000
    public static let ignored: UInt32 = 0x8000
    public static let isDirectory: UInt32 = 0x4000_0000
    static let onlyDirectory: UInt32 = 0x0100_0000
    static let dontFollow: UInt32 = 0x0200_0000
    static let maskAdd: UInt32 = 0x2000_0000

    /// A non-blocking inotify instance.
    public static func open() throws(Errno) -> OwnedFD {
        OwnedFD(try checked { ferry_inotify_init(O_CLOEXEC | O_NONBLOCK) })
    }

    /// Watches the directory open as `fd` (any descriptor, O_PATH included) for `mask`;
    /// returns the watch descriptor (the same one again for the same directory).
    public static func watch(instance: OwnedFD, directory fd: Int32, mask: UInt32) throws(Errno) -> Int32 {
        let path = ProcSelfFD.path(of: fd)   // inotify_add_watch takes no directory descriptor
        return try checked { ferry_inotify_add_watch(instance.rawValue, path, mask | onlyDirectory) }
    }

    /// Removes a watch (EINVAL once the directory is gone, which is harmless).
    public static func unwatch(instance: OwnedFD, _ wd: Int32) {
        _ = ferry_inotify_rm_watch(instance.rawValue, wd)
    }
}

/// An eventfd counter: one side signals, the other sleeps in poll until signalled.
public final class EventCounter: Sendable {
    /// The eventfd.
    public let fd: OwnedFD

    public init() throws(Errno) { fd = OwnedFD(try checked { ferry_eventfd() }) }

    /// Wakes a waiter (adds 1 to the counter).
    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd.rawValue, &one, 8)
    }

    /// Resets the counter to 0 (after a wake-up).
    public func drain() { EventCounter.drain(fd.rawValue) }

    /// Resets the counter of the non-blocking eventfd `eventFD` to 0.
    public static func drain(_ eventFD: Int32) {
        var value: UInt64 = 0
        _ = Glibc.read(eventFD, &value, 8)
    }
}

extension Host {
    /// Waits until one of `descriptors` is readable or `timeoutMilliseconds` pass (-1: no
    /// limit); returns which are readable (empty on timeout or EINTR).
    public static func waitReadable(_ descriptors: [Int32], timeoutMilliseconds: Int32) -> [Bool] {
        var fds = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let n = poll(&fds, nfds_t(fds.count), timeoutMilliseconds)
        guard n > 0 else { return descriptors.map { _ in false } }
        return fds.map { $0.revents != 0 }
    }

    /// read(2) into `buffer`; 0 when nothing is ready (EAGAIN/EINTR).
    public static func readAvailable(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
        if n >= 0 { return n }
        let error = Errno.current
        if error.rawValue == EAGAIN || error.rawValue == EINTR { return 0 }
        throw error
    }
}
