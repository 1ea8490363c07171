import FerryFS
import FerrySystem
import Glibc

/// Watches the shared directory's whole file system with fanotify, which reports every
/// process's changes with file handles: of the changed file, and of its directory with the
/// entry name. Handles map to nodes through the inode store's handle index.
final class FanotifyWatcher: HostWatcher {
    /// What is watched: contents, attributes (incl. xattrs) and entries, for files and directories.
    static let mask = Fanotify.modify | Fanotify.closeWrite | Fanotify.attrib | Fanotify.create | Fanotify.delete
        | Fanotify.movedFrom | Fanotify.movedTo | Fanotify.onDirectory

    let mechanism = "fanotify (whole file system, file handles)"
    private let group: OwnedFD
    private let inodes: InodeStore
    private let ownProcess = getpid()

    /// Marks the file system of `root` (a readable directory descriptor). Throws EPERM without
    /// CAP_SYS_ADMIN, or EXDEV/ENODEV/EOPNOTSUPP where the file system has no file handles.
    init(root: OwnedFD, inodes: InodeStore) throws(Errno) {
        group = try Fanotify.openGroup()
        try Fanotify.markFilesystem(group: group, directory: root.rawValue, mask: FanotifyWatcher.mask)
        self.inodes = inodes
    }

    func run(into sink: ChangeSink) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let ready = Host.waitReadable([group.rawValue, sink.stop.fd.rawValue], timeoutMilliseconds: -1)
            if ready.count > 1 && ready[1] { return }
            guard let n = try? Host.readAvailable(group.rawValue, into: buffer), n > 0 else { continue }
            for event in FanotifyEvent.parse(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) {
                record(event, into: sink)
            }
            sink.flush()
        }
    }

    /// Reduces one event to records about held nodes.
    func record(_ event: FanotifyEvent, into sink: ChangeSink) {
        sink.stats.eventsSeen.increment()
        if event.mask & Fanotify.queueOverflow != 0 {
            sink.watcherOverflowed()
            return
        }
        // Changes made through this server: the kernel made them, so it knows.
        if event.pid == ownProcess {
            sink.stats.eventsOwn.increment()
            return
        }
        let node = event.object.flatMap { inodes.nodeID(for: $0) } ?? 0
        let parent = event.directory.flatMap { inodes.nodeID(for: $0) } ?? 0
        var pushed = false
        func push(_ record: ChangeRecord) { sink.push(record); pushed = true }

        if parent != 0 && event.mask & (Fanotify.create | Fanotify.movedFrom | Fanotify.movedTo) != 0 {
            push(ChangeRecord(kind: .entry, parent: parent, name: event.name, node: node))
        }
        if parent != 0 && event.mask & Fanotify.delete != 0 {
            push(ChangeRecord(kind: .removed, parent: parent, name: event.name, node: node))
        }
        if node != 0 {
            if event.mask & (Fanotify.modify | Fanotify.closeWrite) != 0 {
                push(ChangeRecord(kind: .data, node: node))
            } else if event.mask & (Fanotify.attrib | Fanotify.movedFrom | Fanotify.movedTo | Fanotify.delete) != 0 {
                push(ChangeRecord(kind: .attributes, node: node))
            }
        }
        if !pushed { sink.stats.eventsDropped.increment() }
    }
}
