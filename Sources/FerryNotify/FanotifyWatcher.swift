import FerryFS
import FerrySystem
import Glibc
import Logging
import Synchronization

/// Watches the host with fanotify, which reports changes with file handles (of the changed
/// file, and of its directory with the entry name) and the pid of the process that made them,
/// so this server's own changes are recognised and skipped. Handles map to nodes through the
/// inode store's handle index.
///
/// Two scopes: with CAP_SYS_ADMIN, the whole file system of SOURCE (and of each file system
/// mounted below it, once the kernel reaches it); without, a mark on every directory the
/// kernel holds (events on the directory and its entries), like inotify but with the own-change
/// filter.
final class FanotifyWatcher: HostWatcher, InodeStoreObserver {
    /// What is marked.
    enum Scope {
        case filesystems
        case cachedDirectories
    }

    /// What is watched: contents, attributes (incl. xattrs) and entries, for files and directories.
    /// Events about a directory entry, reported on the directory with the entry's name.
    static let entryEvents = Fanotify.create | Fanotify.delete | Fanotify.movedFrom | Fanotify.movedTo
    /// Every event bit a change record is made from.
    static let nodeEvents = Fanotify.modify | Fanotify.closeWrite | Fanotify.attrib | entryEvents
    static let mask = Fanotify.modify | Fanotify.closeWrite | Fanotify.attrib | Fanotify.create | Fanotify.delete
        | Fanotify.movedFrom | Fanotify.movedTo | Fanotify.onDirectory

    let scope: Scope
    var mechanism: String {
        scope == .filesystems ? "fanotify (whole file system, file handles)"
                              : "fanotify (a mark per cached directory, file handles)"
    }
    private let group: OwnedFD
    private let inodes: InodeStore
    private let logger: Logger
    /// fsid (as events report it) → device number (as nodes are keyed), per file system seen.
    private let filesystems: Mutex<[UInt64: UInt64]>
    private let markFailures = Atomic<Int>(0)
    /// Failed ignore marks for passed-through files (the first is logged).
    private let ignoreFailures = Atomic<Int>(0)
    /// Passed-through writers released just now, whose close may still be reported.
    private let latePassthroughCloses = LatePassthroughCloses()

    /// Watches SOURCE (`root`, a readable directory descriptor on device `rootDevice`). In
    /// the filesystems scope this marks its file system at once: EPERM without CAP_SYS_ADMIN,
    /// EXDEV/ENODEV/EOPNOTSUPP where the file system has no file handles. In the directories
    /// scope marks come with the directory nodes (`attach`).
    init(root: OwnedFD, rootDevice: UInt64, scope: Scope, inodes: InodeStore, logger: Logger) throws(Errno) {
        group = try Fanotify.openGroup()
        if scope == .filesystems {
            try Fanotify.markFilesystem(group: group, directory: root.rawValue, mask: FanotifyWatcher.mask)
        } else {
            // Fails here, not on the first directory, where the file system cannot do it.
            try Fanotify.markDirectory(group: group, anyDescriptor: root.rawValue, mask: FanotifyWatcher.mask)
        }
        filesystems = Mutex([try Fanotify.filesystemID(of: root.rawValue): rootDevice])
        self.scope = scope
        self.inodes = inodes
        self.logger = logger
    }

    /// Starts hearing about directory nodes and file systems below the root, to mark them.
    func attach() { inodes.observe(self) }

    /// A node on a file system mounted below SOURCE: learn its fsid, and in the filesystems
    /// scope mark it too, so its changes are seen as well.
    func reached(filesystem device: UInt64, fd: Int32) {
        do {
            let id = try Fanotify.filesystemID(of: fd)
            if scope == .filesystems {
                try Fanotify.markFilesystem(group: group, anyDescriptor: fd, mask: FanotifyWatcher.mask)
            }
            filesystems.withLock { $0[id] = device }
        } catch {
            logger.warning("cannot watch the file system mounted below the share (device \(device >> 32):\(device & 0xffff_ffff)) with fanotify (\(error)); its changes show up only when cache timeouts expire")
        }
    }

    /// A new directory node: in the directories scope, mark it (the mark is evictable and goes
    /// away with the inode, so nothing is done when the node is forgotten).
    func remembered(directory nodeID: UInt64, fd: Int32) {
        guard scope == .cachedDirectories else { return }
        do {
            try Fanotify.markDirectory(group: group, anyDescriptor: fd, mask: FanotifyWatcher.mask)
        } catch {
            // Typically ENOSPC (fs.fanotify.max_user_marks): say so once, keep serving.
            if markFailures.wrappingAdd(1, ordering: .relaxed).oldValue == 0 {
                logger.warning("cannot watch a directory with fanotify (\(error)); changes in such directories show up only when cache timeouts expire")
            }
        }
    }

    /// A node whose writes the kernel makes through a passthrough backing file: ignore its
    /// CLOSE_WRITE events while it has such files. The backing files report the clients'
    /// closes as a host process's, and each one would cost an invalidation and a GETATTR;
    /// the clients' writes update the kernel's attributes themselves (protocol/notify-ring.md).
    func passthroughWriters(_ nodeID: UInt64, present: Bool, fd: Int32) {
        if !present { latePassthroughCloses.noteReleased(nodeID) }
        do {
            try Fanotify.ignore(group: group, anyDescriptor: fd, mask: Fanotify.closeWrite, on: present)
        } catch {
            if ignoreFailures.wrappingAdd(1, ordering: .relaxed).oldValue == 0 {
                logger.warning("cannot have fanotify ignore the closes of passed-through files (\(error)); each one invalidates the kernel's attributes (logged once)")
            }
        }
    }

    func run(into sink: ChangeSink) {
        // Events carry the writer's pid as this reader's pid namespace numbers it: read now,
        // in the namespace the server serves from (a new pid namespace numbers Ferry 1 and
        // host processes 0).
        let ownProcess = getpid()
        readEvents(from: group.rawValue, into: sink) { bytes in
            // Changes made through this server: the kernel made them, so it knows. They are
            // skipped before their handles are even decoded.
            var own = 0
            let events = FanotifyEvent.parse(bytes, skipping: ownProcess, skipped: &own)
            sink.stats.eventsSeen.increment(by: UInt64(own))
            sink.stats.eventsOwn.increment(by: UInt64(own))
            var pushed = false
            for event in events {
                pushed = record(event, into: sink) || pushed
            }
            return pushed
        }
    }

    /// Reduces one event to records about held nodes; true when something was pushed (or an
    /// overflow raised) and the invalidator should wake.
    func record(_ event: FanotifyEvent, into sink: ChangeSink) -> Bool {
        sink.stats.eventsSeen.increment()
        if event.mask & Fanotify.queueOverflow != 0 {
            inodes.unmatchedChanges.lost()
            sink.watcherOverflowed()
            return true
        }
        guard let device = filesystems.withLock({ $0[event.filesystem] }) else {
            sink.stats.eventsDropped.increment()
            return false
        }
        // A node registered while this runs may have read its attributes before the change.
        let (parent, node) = inodes.unmatchedChanges.matching { () -> ((UInt64, UInt64), missedNode: Bool) in
            let parent = event.directory.flatMap { inodes.nodeID(for: $0, device: device) } ?? 0
            var node = event.object.flatMap { inodes.nodeID(for: $0, device: device) } ?? 0
            // A change to a directory itself (FAN_ONDIR, no entry change: chmod, chown, an ACL)
            // comes with the directory's own FID in the directory record and no object record.
            if event.object == nil && event.mask & Fanotify.onDirectory != 0 && event.mask & Self.entryEvents == 0 {
                node = parent
            }
            return ((parent, node), node == 0)
        }
        var pushed = false
        func push(_ record: ChangeRecord) { sink.push(record); pushed = true }

        if parent != 0 && event.mask & (Fanotify.create | Fanotify.movedFrom | Fanotify.movedTo) != 0 {
            push(ChangeRecord(kind: .entry, parent: parent, name: event.name, node: node))
        }
        if parent != 0 && event.mask & Fanotify.delete != 0 {
            push(ChangeRecord(kind: .removed, parent: parent, name: event.name, node: node))
        }
        if node != 0 && event.mask & Self.nodeEvents == Fanotify.closeWrite
            && latePassthroughCloses.explains(closeOf: node) {
            sink.stats.eventsDropped.increment()
            return false
        }
        if node != 0 {
            if event.mask & (Fanotify.modify | Fanotify.closeWrite) != 0 {
                push(ChangeRecord(kind: .data, node: node))
            } else if event.mask & (Fanotify.attrib | Fanotify.movedFrom | Fanotify.movedTo | Fanotify.delete) != 0 {
                push(ChangeRecord(kind: .attributes, node: node))
            }
        }
        if !pushed { sink.stats.eventsDropped.increment() }
        return pushed
    }
}
