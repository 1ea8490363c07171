import FerryFS
import FerryProtocol
import FerrySystem
import Logging

/// Keeps the kernel's caches of a Ferry mount coherent with changes made on the host.
///
/// A host watcher (fanotify, else inotify) reduces host events to the nodes the kernel holds
/// and pushes them into a bounded `ChangeRing`; the `Invalidator`, on its own thread, drains
/// the ring in batches and sends FUSE invalidations. protocol/notify-ring.md has the rules.
public final class ChangeNotifier: Sendable {
    private let watcher: any HostWatcher
    private let sink: ChangeSink
    private let inodes: InodeStore
    private let logger: Logger
    /// Counters for --stats and SIGUSR1.
    let stats = NotifyStats()

    /// Which mechanism watches the host, for the log.
    public var mechanism: String { watcher.mechanism }
    /// Whether fanotify watches whole file systems (which needs CAP_SYS_ADMIN while serving:
    /// file systems reached below SOURCE later are marked then).
    public var watchesWholeFilesystems: Bool { (watcher as? FanotifyWatcher)?.scope == .filesystems }

    /// Sets up the watcher for `fs` (which must index file handles: FSOptions.indexHandles)
    /// and a ring of `ringSize` slots (rounded up to a power of two). Throws when no watcher
    /// can run; the reasons are in the error's message.
    public init(fs: PassthroughFS, ringSize: Int, watcher choice: WatcherChoice = .auto,
                logger: Logger) throws(NotifyUnavailable) {
        self.inodes = fs.inodes
        self.logger = logger
        do {
            sink = try ChangeSink(ring: ChangeRing(capacity: ringSize), stats: stats)
        } catch {
            throw NotifyUnavailable("cannot create an eventfd: \(error)")
        }
        var refusals: [String] = []
        if choice != .inotify {
            let scopes: [FanotifyWatcher.Scope] = choice == .fanotifyDirectories ? [.cachedDirectories] : [.filesystems, .cachedDirectories]
            for scope in scopes {
                do {
                    let fanotify = try FanotifyWatcher(root: fs.rootDirectory, rootDevice: fs.inodes.root.key.device,
                                                       scope: scope, inodes: fs.inodes, logger: logger)
                    fanotify.attach()
                    watcher = fanotify
                    if !refusals.isEmpty { logger.notice("\(refusals[0]); marking each cached directory instead") }
                    return
                } catch {
                    refusals.append(scope == .filesystems ? "fanotify refused a file-system mark (\(error))"
                                                          : "fanotify refused a directory mark (\(error))")
                }
            }
        }
        if choice == .auto || choice == .inotify {
            do {
                let inotify = try InotifyWatcher(inodes: fs.inodes, logger: logger)
                inotify.attach()
                watcher = inotify
                if !refusals.isEmpty { logger.notice("\(refusals.joined(separator: "; ")); watching with inotify instead") }
                return
            } catch {
                refusals.append("inotify refused (\(error))")
            }
        }
        throw NotifyUnavailable(refusals.joined(separator: "; "))
    }

    /// Starts the watcher and invalidator threads; `minor` is the FUSE minor version agreed at
    /// INIT and `send` writes one notification to the kernel.
    ///
    /// `prime` runs on the invalidator thread before its first notification (changes seen
    /// meanwhile wait in the ring): it must make the kernel load the root's attributes (a stat of
    /// the mount point). Until then the kernel's root has the placeholder mode the mount gave it,
    /// with no permissions, and an invalidation racing its first GETATTR makes the kernel drop
    /// the answer and deny the first access (EACCES) under default_permissions.
    public func start(minor: UInt32, prime: @escaping @Sendable () -> Void = {},
                      send: @escaping NotificationSender) throws(Errno) {
        let invalidator = Invalidator(sink: sink, inodes: inodes, minor: minor, send: send, logger: logger)
        let watcher = self.watcher, sink = self.sink
        try HostThread.spawn(name: "ferry-watch") { watcher.run(into: sink) }.detach()
        try HostThread.spawn(name: "ferry-invalidate") { prime(); invalidator.run() }.detach()
        logger.info("change notifications: \(watcher.mechanism), ring of \(sink.ring.capacity) slots")
    }

    /// Stops both threads (they finish what they are doing and exit).
    public func stop() { sink.stop.signal() }

    /// The counters now.
    public func snapshot() -> NotifyStats.Snapshot {
        stats.snapshot(ringHighWater: sink.ring.highWaterMark, ringCapacity: sink.ring.capacity)
    }
}

/// Which host watcher to run.
public enum WatcherChoice: String, Sendable, CaseIterable {
    /// fanotify where the kernel allows it, else inotify.
    case auto
    /// fanotify only: file-system marks (root), else a mark per cached directory
    /// (unprivileged); filters this server's own changes.
    case fanotify
    /// fanotify with a mark per cached directory even where file-system marks are allowed
    /// (a busy host file system then costs nothing).
    case fanotifyDirectories = "fanotify-directories"
    /// inotify only: a watch per cached directory; cannot tell this server's own changes.
    case inotify
}

/// Why change notifications cannot run (logged; the server then serves without them).
public struct NotifyUnavailable: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
