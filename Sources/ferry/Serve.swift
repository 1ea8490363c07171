import ArgumentParser
import FerryEngine
import FerryFS
import FerryNotify
import FerrySystem
import FerryTransport
import Glibc
import Logging

extension CacheMode: ExpressibleByArgument {}
extension InodeFileHandles: ExpressibleByArgument {}
extension WatcherChoice: ExpressibleByArgument {}

/// `ferry serve SOURCE MOUNTPOINT`: mount SOURCE at MOUNTPOINT and serve it until SIGINT,
/// SIGTERM or an unmount.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount SOURCE at MOUNTPOINT and serve it in the foreground.")

    @Argument(help: "The host directory to share.")
    var source: String

    @Argument(help: "Where to mount it (an existing, empty directory).")
    var mountpoint: String

    @Option(help: "Kernel caching: never (timeouts 0, direct I/O), auto (1 s), always (1 day, keep page cache).")
    var cache: CacheMode = .auto

    @Flag(help: "Let the kernel cache writes (FUSE writeback cache).")
    var writeback = false

    @Flag(help: "Share read-only.")
    var readonly = false

    @Flag(name: .customLong("no-xattr"), help: "Do not serve extended attributes.")
    var noXattr = false

    @Flag(name: .customLong("no-posix-locks"), help: "Keep fcntl locks inside the mount instead of taking host locks.")
    var noPosixLocks = false

    @Flag(name: .customLong("no-flock"), help: "Keep flock locks inside the mount instead of taking host locks.")
    var noFlock = false

    @Option(help: "Request threads (default: twice the core count, at least 4).")
    var threads: Int?

    @Option(help: "How inodes are remembered: never (an fd each), prefer (file handles where possible), mandatory.")
    var inodeFileHandles: InodeFileHandles = .prefer

    @Flag(inversion: .prefixedNo, help: "Let other users reach the mount (default: on when run as root).")
    var allowOther: Bool?

    @Flag(inversion: .prefixedNo, help: "Push host-side changes into the kernel's caches (fanotify, else inotify). Default on, except with --cache never.")
    var notify: Bool?

    @Option(help: "Slots in the change ring between the host watcher and the invalidator (a power of two).")
    var notifyRingSize = 4096

    @Option(help: "How host changes are watched: auto (fanotify, else inotify), fanotify, fanotify-directories (a mark per cached directory) or inotify.")
    var notifyWatcher: WatcherChoice = .auto

    @Flag(help: "Print the change-notification counters every 10 s and at exit (SIGUSR1 prints them any time).")
    var stats = false

    @Option(help: "trace, debug, info, notice, warning, error or critical (debug logs every request).")
    var logLevel: Logger.Level = .info

    func validate() throws {
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
        if notifyRingSize < 2 || notifyRingSize > 1 << 20 || notifyRingSize & (notifyRingSize - 1) != 0 {
            throw ValidationError("--notify-ring-size must be a power of two between 2 and 1048576")
        }
    }

    func run() throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ferry")
        do {
            try serve(logger: logger)
        } catch let error as StartupError {
            printError("ferry: \(error.message)")
            throw ExitCode(2)
        } catch let error as MountError {
            printError("ferry: \(error.description)")
            throw ExitCode(1)
        }
    }

    private func serve(logger: Logger) throws {
        try Preflight.check(source: source, mountpoint: mountpoint)
        let root = geteuid() == 0
        if !root {
            logger.notice("running as uid \(geteuid()), not root: every request runs with this user's rights (no credential switching)")
        }
        var fsOptions = FSOptions()
        fsOptions.readOnly = readonly
        fsOptions.xattr = !noXattr
        fsOptions.inodeFileHandles = inodeFileHandles
        fsOptions.writebackCache = writeback
        let wantNotify = notify ?? (cache != .never)
        fsOptions.indexHandles = wantNotify
        let fs: PassthroughFS
        do {
            fs = try PassthroughFS(source: source, options: fsOptions, logger: logger)
        } catch {
            if inodeFileHandles == .mandatory && error.rawValue == EOPNOTSUPP {
                throw StartupError("\(source) does not support file handles, but --inode-file-handles mandatory was given")
            }
            if inodeFileHandles == .mandatory && error.rawValue == EPERM {
                throw StartupError("--inode-file-handles mandatory needs CAP_DAC_READ_SEARCH (run as root) to reopen file handles")
            }
            throw StartupError("cannot open source \(source): \(error)")
        }
        var engineOptions = EngineOptions()
        engineOptions.cache = cache
        engineOptions.writebackCache = writeback
        engineOptions.posixLocks = !noPosixLocks
        engineOptions.flockLocks = !noFlock
        engineOptions.posixACLs = !noXattr
        let notifier = try makeNotifier(fs: fs, enabled: wantNotify, logger: logger)
        engineOptions.notifications = notifier != nil
        let engine = FUSEEngine(fs: fs, options: engineOptions, logger: logger)

        let sourceFlags = (try? Host.statfs(fs.rootDirectory.rawValue)).map { Int($0.f_flags) } ?? 0
        let mountOptions = MountOptions.list(source: source, sourceFlags: sourceFlags, root: root,
                                             allowOther: allowOther ?? root, readonly: readonly)

        // Signals go to one waiting thread only; request threads inherit the blocked mask.
        let signals = SignalWaiter(signals: [SIGINT, SIGTERM, SIGHUP, SIGUSR1])
        signal(SIGPIPE, SIG_IGN)
        let mount = try FUSEMount(mountpoint: mountpoint, options: mountOptions)
        defer { mount.close() }
        let threadCount = threads ?? max(4, 2 * Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let server = DevFuseServer(engine: engine, mount: mount, threads: threadCount, logger: logger)
        let report = StatsReport(notifier: notifier, logger: logger)
        try signals.start { signal in
            if signal == SIGUSR1 { report.print(); return }
            logger.info("signal \(signal) received")
            server.stop()
        }
        if stats { try report.startPeriodic(seconds: 10) }
        logger.info("serving \(source) at \(mountpoint) (cache \(cache.rawValue)\(readonly ? ", read-only" : ""))")
        try server.run { session in
            let mountpoint = self.mountpoint
            try notifier?.start(minor: session.minor, prime: {
                var attributes = stat()
                if stat(mountpoint, &attributes) != 0 {
                    logger.warning("could not stat \(mountpoint) before sending notifications: \(Errno(rawValue: errno))")
                }
            }, send: { message in server.sendNotification(message) })
        }
        notifier?.stop()
        if stats { report.print() }
        logger.info("unmounted; exiting")
    }

    /// The change notifier, or nil (with the reason logged) when it is off or cannot run. When
    /// the user asked for it explicitly (--notify or a --notify-watcher), not running is a
    /// start-up error instead.
    private func makeNotifier(fs: PassthroughFS, enabled: Bool, logger: Logger) throws -> ChangeNotifier? {
        guard enabled else {
            logger.info("change notifications off\(notify == nil ? " (not needed with --cache never)" : "")")
            return nil
        }
        do {
            return try ChangeNotifier(fs: fs, ringSize: notifyRingSize, watcher: notifyWatcher, logger: logger)
        } catch {
            if notify == true || notifyWatcher != .auto {
                throw StartupError("change notifications cannot run: \(error)")
            }
            logger.warning("change notifications unavailable: \(error); host-side changes show up only when cache timeouts expire")
            return nil
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// A start-up problem, reported as one line and exit status 2.
struct StartupError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
