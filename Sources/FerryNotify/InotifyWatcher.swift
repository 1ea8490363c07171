import FerryFS
import FerrySystem
import Glibc
import Logging
import Synchronization

/// The fallback watcher: one inotify watch on every directory the kernel holds, added when
/// the directory's node is created (before the kernel sees it) and removed when it is
/// forgotten. inotify names the changed entry within its directory; the entry's node is found
/// by its host identity.
///
/// Limits (protocol/notify-ring.md): a change made through a hard link in a directory the
/// kernel does not hold is not seen; inotify cannot tell this server's own changes from
/// others', so those come back as (harmless) invalidations; watches count against
/// fs.inotify.max_user_watches.
final class InotifyWatcher: HostWatcher, InodeStoreObserver {
    static let mask = Inotify.modify | Inotify.closeWrite | Inotify.attrib | Inotify.create | Inotify.delete
        | Inotify.movedFrom | Inotify.movedTo

    let mechanism = "inotify (a watch per cached directory)"
    private let instance: OwnedFD
    private let inodes: InodeStore
    private let logger: Logger
    /// watch descriptor ↔ directory node.
    private let watches = Mutex<(byWatch: [Int32: UInt64], byNode: [UInt64: Int32])>(([:], [:]))
    private let failures = Atomic<Int>(0)

    init(inodes: InodeStore, logger: Logger) throws(Errno) {
        instance = try Inotify.open()
        self.inodes = inodes
        self.logger = logger
    }

    /// Starts watching: from now on every directory node gets a watch (the root at once).
    func attach() { inodes.observe(self) }

    func remembered(directory nodeID: UInt64, fd: Int32) {
        do {
            let wd = try Inotify.watch(instance: instance, directory: fd, mask: InotifyWatcher.mask)
            watches.withLock { map in
                map.byWatch[wd] = nodeID
                map.byNode[nodeID] = wd
            }
        } catch {
            // Typically ENOSPC (fs.inotify.max_user_watches): say so once, keep serving.
            if failures.wrappingAdd(1, ordering: .relaxed).oldValue == 0 {
                logger.warning("cannot watch a directory with inotify (\(error)); changes in such directories show up only when cache timeouts expire")
            }
        }
    }

    func forgotten(directory nodeID: UInt64) {
        guard let wd = watches.withLock({ map -> Int32? in
            guard let wd = map.byNode.removeValue(forKey: nodeID) else { return nil }
            map.byWatch[wd] = nil
            return wd
        }) else { return }
        Inotify.unwatch(instance: instance, wd)
    }

    func run(into sink: ChangeSink) {
        let credentials = ThreadCredentials(switching: false)
        readEvents(from: instance.rawValue, into: sink) { bytes in
            var pushed = false
            for event in InotifyEvent.parse(bytes) {
                pushed = record(event, into: sink, credentials) || pushed
            }
            return pushed
        }
    }

    /// Reduces one event to records about held nodes; true when something was pushed (or an
    /// overflow raised) and the invalidator should wake.
    private func record(_ event: InotifyEvent, into sink: ChangeSink, _ credentials: ThreadCredentials) -> Bool {
        sink.stats.eventsSeen.increment()
        if event.mask & Inotify.queueOverflow != 0 {
            sink.watcherOverflowed()
            return true
        }
        guard let parent = watches.withLock({ $0.byWatch[event.watch] }) else {
            sink.stats.eventsDropped.increment()
            return false
        }
        let record: ChangeRecord
        if event.name.isEmpty {
            // The watched directory itself.
            guard event.mask & Inotify.attrib != 0 else {
                sink.stats.eventsDropped.increment()
                return false
            }
            record = ChangeRecord(kind: .attributes, node: parent)
        } else if event.mask & (Inotify.create | Inotify.movedFrom | Inotify.movedTo) != 0 {
            record = ChangeRecord(kind: .entry, parent: parent, name: event.name,
                                  node: node(named: event.name, in: parent, credentials) ?? 0)
        } else if event.mask & Inotify.delete != 0 {
            record = ChangeRecord(kind: .removed, parent: parent, name: event.name, node: 0)
        } else if let child = node(named: event.name, in: parent, credentials) {
            let contents = event.mask & (Inotify.modify | Inotify.closeWrite) != 0
            record = ChangeRecord(kind: contents ? .data : .attributes, node: child)
        } else {
            sink.stats.eventsDropped.increment()
            return false
        }
        sink.push(record)
        return true
    }

    /// The held node that `name` in directory `parent` is now, found by its host identity.
    private func node(named name: [UInt8], in parent: UInt64, _ credentials: ThreadCredentials) -> UInt64? {
        guard let directory = try? inodes.get(parent) else { return nil }
        let stat = try? directory.withPathFD(credentials) { (fd) throws(Errno) in
            try Host.statx(fd, CName(name), flags: HostFlags.atSymlinkNoFollow, mask: HostFlags.statxBasicStats | HostFlags.statxMntID)
        }
        return stat.flatMap { inodes.nodeID(for: InodeStore.key(of: $0)) }
    }
}
