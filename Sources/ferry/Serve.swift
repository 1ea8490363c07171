import ArgumentParser
import FerryEngine
import FerryFS
import FerryIO
import FerryNotify
import FerrySandbox
import FerrySystem
import FerryTransport
import Glibc
import Logging

extension CacheMode: ExpressibleByArgument {}
extension InodeFileHandles: ExpressibleByArgument {}
extension WatcherChoice: ExpressibleByArgument {}
extension IOEngineKind: ExpressibleByArgument {}

/// `--passthrough auto|never`.
enum PassthroughChoice: String, CaseIterable, ExpressibleByArgument {
    /// On where the server may register backing files and the kernel offers passthrough.
    case auto
    /// Every read and write goes through Ferry.
    case never
}

/// `--transport auto|uring|dev`.
enum TransportChoice: String, CaseIterable, ExpressibleByArgument {
    /// FUSE-over-io_uring where the kernel offers it, else /dev/fuse (saying why in the log).
    case auto
    /// FUSE-over-io_uring, or a start-up error.
    case uring
    /// read(2)/write(2) on /dev/fuse.
    case dev
}

/// `ferry serve SOURCE MOUNTPOINT`: mount SOURCE at MOUNTPOINT and serve it until SIGINT,
/// SIGTERM or an unmount.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount SOURCE at MOUNTPOINT and serve it in the foreground.")

    @Argument(help: "The host directory to share.")
    var source: String

    @Argument(help: ArgumentHelp("Where to mount it (an existing, empty directory); not with --socket-path.",
                                 valueName: "mountpoint"))
    var mountpointArgument: String?

    /// MOUNTPOINT ("" when serving a VM with --socket-path, which has none).
    var mountpoint: String { mountpointArgument ?? "" }

    @Option(help: "Serve a VM instead of mounting: listen on this unix socket as a vhost-user-fs back-end (QEMU's vhost-user-fs-pci). See ServeVhost.swift.")
    var socketPath: String?

    @Option(name: .customLong("fd"), help: "Serve a VM on this already listening unix socket (passed in by a supervisor such as libvirt) instead of --socket-path.")
    var listenFD: Int32?

    @Option(help: "With --socket-path: the virtio-fs tag the guest mounts (QEMU's tag= option sets what the guest sees; Ferry logs it).")
    var tag: String?

    @Flag(help: "With --socket-path: after the VM disconnects, wait for the next connection instead of exiting.")
    var persist = false

    @Option(help: "Kernel caching: never (timeouts 0, direct I/O), auto (1 s), always (1 day, keep page cache).")
    var cache: CacheMode = .auto

    @Flag(help: "Let the kernel cache writes (FUSE writeback cache; turns passthrough off).")
    var writeback = false

    @Option(help: "FUSE passthrough: auto (plain files are read, written and mapped by the kernel on the host file; needs CAP_SYS_ADMIN, not with --writeback) or never.")
    var passthrough: PassthroughChoice = .auto

    @Option(help: "How requests reach Ferry: uring (FUSE-over-io_uring queues, one per CPU; Linux 6.14+ with /sys/module/fuse/parameters/enable_uring on, else a start-up error), dev (/dev/fuse reader threads) or auto (uring where the kernel offers it, else dev).")
    var transport: TransportChoice = .auto

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

    @Option(help: "I/O engine for the reads, writes, fsyncs and fallocates Ferry performs: uring (io_uring, batched and asynchronous; falls back to sync where io_uring cannot be set up) or sync (pread/pwrite on the request thread).")
    var ioEngine: IOEngineKind = .uring

    @Option(help: "Data requests each request thread keeps in flight on the I/O engine (1-256).")
    var ioDepth: Int = 16

    @Option(help: "How inodes are remembered: never (an fd each), prefer (file handles where possible), mandatory.")
    var inodeFileHandles: InodeFileHandles = .prefer

    @Option(help: "Inodes the client may hold at once; past it a LOOKUP or CREATE is answered ENOMEM (default 1000000; with an O_PATH descriptor per inode, half the descriptors). See README, Resource bounds.")
    var maxInodes: Int?

    @Option(help: "Files and directories the client may have open at once; past it an open is answered ENFILE (default half the descriptor limit, less a reserve).")
    var maxOpenFiles: Int?

    @Option(help: "Blocked lock requests (F_SETLKW, flock) that may wait at once, a thread each; past it one is answered ENOLCK (default 1024).")
    var maxLockWaiters: Int?

    @Option(help: "Set RLIMIT_NOFILE (soft and hard) to N instead of raising it as far as allowed; 0 leaves it as it is (virtiofsd's --rlimit-nofile).")
    var rlimitNofile: Int?

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

    @Option(name: .customLong("translate-uid"), parsing: .singleValue,
            help: ArgumentHelp("Translate uids between the client and the host, as virtiofsd does (repeatable): map:GUEST:HOST:COUNT, guest:GUEST:HOST:COUNT, host:HOST:GUEST:COUNT, squash-guest:GUEST:HOST:COUNT, squash-host:HOST:GUEST:COUNT, forbid-guest:GUEST:COUNT. Ids no rule covers pass unchanged; overlapping rules are refused; --explain prints the table.",
                               valueName: "rule"))
    var translateUID: [String] = []

    @Option(name: .customLong("translate-gid"), parsing: .singleValue,
            help: ArgumentHelp("The same for gids (supplementary groups included).", valueName: "rule"))
    var translateGID: [String] = []

    @Flag(help: "Allow idmapped bind mounts of the mount (mount_setattr MOUNT_ATTR_IDMAP, podman's :idmap; Linux 6.12+). The kernel is then the only permission checker: requests that create no inode carry no caller, and Ferry runs them with its own rights.")
    var idmappedMounts = false

    @Option(help: "trace, debug, info, notice, warning, error or critical (debug logs every request).")
    var logLevel: Logger.Level = .info

    @Option(help: "Append the log (and libfuse's messages) to this file instead of standard error.")
    var logFile: String?

    @Option(name: .customShort("o"), parsing: .singleValue,
            help: ArgumentHelp("Mount options OPT[,OPT...]: ro, nosuid, nodev, noexec, noatime, relatime, strictatime, nodiratime, and Ferry's own options without dashes (cache=always, writeback, no_xattr, threads=8, ...).",
                               valueName: "options"))
    var mountOptions: [String] = []

    /// Set by `ferry SOURCE MOUNTPOINT` (MountCommand): the descriptor on which to report "the
    /// mount is up" or the start-up error.
    @Option(help: .hidden)
    var readyFd: Int32?

    @Option(help: "After set-up: namespace (new mount, ipc, uts and network namespaces, SOURCE as the root through pivot_root; the default as root), chroot (chroot into SOURCE only) or none (the default for an ordinary user).")
    var sandbox: SandboxMode?

    @Option(help: "System calls outside Ferry's allow-list: kill (the process; default), log (allowed and logged by the kernel), trap (SIGSYS, logged by Ferry, then the process dies) or none (no filter).")
    var seccomp: SeccompMode = .kill

    /// Tests only: once serving, make one system call outside the seccomp allow-list.
    @Flag(help: .hidden)
    var debugForbiddenCall = false

    @Flag(help: "Print the configuration Ferry would run with here (passthrough, I/O engine, transport, and why), then exit without mounting.")
    var explain = false

    func validate() throws {
        try validateTransport()
        let serve: Serve
        do { serve = try applying(try MountOptionList(mountOptions)) } catch { throw ValidationError(error.description) }
        do { _ = try serve.idTranslation() } catch { throw ValidationError(error.description) }
        if let threads = serve.threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
        if serve.ioDepth < 1 || serve.ioDepth > 256 { throw ValidationError("--io-depth must be between 1 and 256") }
        try serve.validateResourceLimits()
        let ringSize = serve.notifyRingSize
        if ringSize < 2 || ringSize > 1 << 20 || ringSize & (ringSize - 1) != 0 {
            throw ValidationError("--notify-ring-size must be a power of two between 2 and 1048576")
        }
        if try MountOptionList(mountOptions).remount {
            throw ValidationError("remount changes a running mount: use `mount -o remount,... MOUNTPOINT` (or `ferry SOURCE MOUNTPOINT -o remount,...`)")
        }
    }

    func run() throws {
        let list = try MountOptionList(mountOptions)
        try applying(list).start(list)
    }

    private func start(_ list: MountOptionList) throws {
        if let readyFd { HostProcess.setCloseOnExec(readyFd) }
        if let logFile {
            do {
                for target: Int32 in [1, 2] {
                    try HostProcess.redirect(target, to: logFile, flags: O_WRONLY | O_APPEND | O_CREAT)
                }
            } catch {
                try fail(StartupError("cannot open log file \(logFile): \(error)"), status: 2)
            }
        }
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ferry")
        do {
            try serve(list, logger: logger)
        } catch let error as StartupError {
            try fail(error, status: 2)
        } catch let error as MountError {
            try fail(StartupError(error.description), status: 1)
        }
    }

    /// Reports a start-up failure (on the ready descriptor when there is one: the foreground
    /// `ferry SOURCE MOUNTPOINT` prints it) and exits with `status`.
    private func fail(_ error: StartupError, status: Int32) throws -> Never {
        if let readyFd {
            try? HostProcess.writeAll(readyFd, Array(("E" + error.message).utf8))
            if logFile != nil { printError("ferry: \(error.message)") }
        } else {
            printError("ferry: \(error.message)")
        }
        throw ExitCode(status)
    }

    private func serve(_ list: MountOptionList, logger: Logger) throws {
        if socketPath != nil || listenFD != nil { return try serveVhost(socketPath: socketPath ?? "", list, logger: logger) }
        try Preflight.check(source: source, mountpoint: mountpoint)
        if explain {
            try explainConfiguration()
            return
        }
        let root = geteuid() == 0
        if !root {
            logger.notice("running as uid \(geteuid()), not root: every request runs with this user's rights (no credential switching)")
        }
        let access = try HostAccess(list: list, source: source, root: root, readOnly: readonly)
        var fsOptions = FSOptions()
        fsOptions.readOnly = readonly
        fsOptions.xattr = !noXattr
        fsOptions.inodeFileHandles = inodeFileHandles
        fsOptions.writebackCache = writeback
        let wantNotify = notify ?? (cache != .never)
        fsOptions.indexHandles = wantNotify
        fsOptions.hostMount = access.privateMount
        try applyDescriptorLimit(logger: logger)
        fsOptions.limits = resourceLimits(logger: logger)
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
            if let attributes = access.privateMount {
                throw StartupError("cannot set up a private \(access.describe(attributes)) mount of \(source) (open_tree/mount_setattr): \(error)")
            }
            throw StartupError("cannot open source \(source): \(error)")
        }
        var engineOptions = try sharedEngineOptions()
        let chosen = try AutoConfiguration(self)
        logger.info("configuration: \(chosen.summary)")
        logIDTranslation(engineOptions, logger: logger)
        engineOptions.idmappedMounts = idmappedMounts
        engineOptions.passthrough = chosen.passthrough
        engineOptions.ioEngine = chosen.ioEngine
        engineOptions.ioDepth = ioDepth
        let transportSetting = chosen.transport
        engineOptions.overIOUring = transportSetting != .devFuse
        let notifier = try makeNotifier(fs: fs, enabled: wantNotify, logger: logger)
        engineOptions.notifications = notifier != nil
        let engine = FUSEEngine(fs: fs, options: engineOptions, logger: logger)

        let sourceFlags = (try? Host.statfs(fs.rootDirectory.rawValue)).map { Int($0.f_flags) } ?? 0
        let mountOptions = MountOptions.list(source: source, sourceFlags: sourceFlags, root: root,
                                             allowOther: allowOther ?? root, readonly: readonly,
                                             noSuid: list.noSuid, noDev: list.noDev, noExec: list.noExec,
                                             sync: list.sync, dirSync: list.dirSync)

        // Signals go to one waiting thread only; request threads inherit the blocked mask.
        let signals = SignalWaiter(signals: SignalWaiter.serverSignals)
        signal(SIGPIPE, SIG_IGN)
        let mount = try FUSEMount(mountpoint: mountpoint, options: mountOptions)
        defer { mount.close() }
        let devNull = readyFd == nil ? nil : try? Host.openat(HostFlags.atFDCWD, CName("/dev/null"), flags: O_RDWR)
        var setting = SandboxSetting(sourceFD: fs.rootDirectory.rawValue, mount: mount)
        setting.capabilities.credentialSwitching = root
        setting.capabilities.fileHandles = inodeFileHandles != .never
        setting.capabilities.passthrough = chosen.passthrough
        setting.capabilities.fanotifyFilesystems = notifier?.watchesWholeFilesystems ?? false
        // glibc counts CPUs from /sys: before the sandbox, where that path would be SOURCE's.
        let threadCount = threads ?? max(4, 2 * Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        _ = HostThread.configuredCPUs   // the ring queues' count, read now for the same reason
        _ = try enterSandbox(setting, root: root, logger: logger)
        let server = DevFuseServer(engine: engine, mount: mount, threads: threadCount,
                                   transport: transportSetting, logger: logger)
        let report = StatsReport(notifier: notifier, fs: fs, logger: logger)
        try signals.start { signal in
            if signal == SIGUSR1 { report.print(); return }
            logger.info("signal \(signal) received")
            server.stop()
        }
        if stats { try report.startPeriodic(seconds: 10) }
        logger.info("serving \(source) at \(mountpoint) (cache \(cache.rawValue)\(readonly ? ", read-only" : "")\(access.summary))")
        try server.run(onInitialized: { session in
            let mountpoint = self.mountpoint
            try notifier?.start(minor: session.minor, prime: {
                if let helper = mount.helper { return helper.statRoot() }   // sandboxed: no path
                var attributes = stat()
                if stat(mountpoint, &attributes) != 0 {
                    logger.warning("could not stat \(mountpoint) before sending notifications: \(Errno(rawValue: errno))")
                }
            }, send: { message in server.sendNotification(message) })
        }, onServing: {
            access.showOnMount(mountpoint, helper: mount.helper, logger: logger)
            reportReady(logger: logger, devNull: devNull)
            if debugForbiddenCall { makeForbiddenCall(logger: logger) }
        })
        notifier?.stop()
        if stats { report.print() }
        logger.info("unmounted; exiting")
    }

    /// The engine settings that mean the same for every transport: caching, locks, ACLs.
    func sharedEngineOptions() throws(StartupError) -> EngineOptions {
        var options = EngineOptions()
        do { options.ids = try idTranslation() } catch { throw StartupError(error.description) }
        options.cache = cache
        options.writebackCache = writeback
        options.posixLocks = !noPosixLocks
        options.flockLocks = !noFlock
        options.posixACLs = !noXattr
        return options
    }

    /// `--explain`: the decisions, one per line, and the settings given.
    private func explainConfiguration() throws {
        let chosen = try AutoConfiguration(self)
        print("ferry serve \(source) \(mountpoint) would run with:")
        for decision in chosen.decisions {
            print("  \(decision.setting): \(decision.value)\n      because \(decision.reason)")
        }
        let threadCount = threads ?? max(4, 2 * Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        print("  cache \(cache.rawValue), \(threadCount) request threads, change notifications \(notify ?? (cache != .never) ? "on" : "off")\(readonly ? ", read-only" : "")\(writeback ? ", writeback cache" : "")")
        print("  sandbox \((try? sandboxMode(root: geteuid() == 0))?.rawValue ?? "refused (needs root)"), seccomp \(seccomp.rawValue)")
        print("  idmapped mounts: \(explainIdmappedMounts())")
        print("  \(explainResourceLimits())")
        try explainIDTranslation()
    }

    /// `--explain`'s line on idmapped mounts.
    private func explainIdmappedMounts() -> String {
        guard idmappedMounts else { return "not allowed (--idmapped-mounts allows them)" }
        let kernel = AutoConfiguration.kernelRelease()
        if let version = kernel.version, version < (6, 12) {
            return "asked for, but Linux \(kernel.release) has no FUSE_ALLOW_IDMAP (6.12 and later): INIT will not agree it"
        }
        return "allowed (FUSE_ALLOW_IDMAP, confirmed at INIT): the kernel alone checks permissions; requests without a caller run with Ferry's rights"
    }

    /// The `--translate-uid` and `--translate-gid` rules, checked (each parsed, no two overlapping).
    func idTranslation() throws(IDRuleError) -> IDTranslation {
        try IDTranslation(uidRules: translateUID, gidRules: translateGID)
    }

    /// `--explain`'s id translation table.
    func explainIDTranslation() throws {
        print("  id translation (guest: the ids callers use; host: the ids on \(source)):")
        for line in try sharedEngineOptions().ids.table { print("  \(line)") }
    }

    /// The start-up log's id translation table (only when there are rules).
    func logIDTranslation(_ options: EngineOptions, logger: Logger) {
        guard !options.ids.isIdentity else { return }
        logger.info("id translation (guest -> host for callers, chown and ACLs written; host -> guest for attributes and ACLs read):")
        for line in options.ids.table { logger.info("\(line)") }
    }

    /// Tells `ferry SOURCE MOUNTPOINT`, if it started this server, that the mount is up; from
    /// then on the log goes only to --log-file (else nowhere: nobody reads the terminal).
    private func reportReady(logger: Logger, devNull: Int32?) {
        guard let readyFd else { return }
        do {
            try HostProcess.writeAll(readyFd, Array("R".utf8))
        } catch {
            logger.warning("could not report readiness: \(error)")
        }
        Host.close(readyFd)
        if logFile == nil, let devNull {   // opened before the sandbox, where /dev has no path
            for target: Int32 in [0, 1, 2] { _ = dup2(devNull, target) }
            Host.close(devNull)
        }
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
struct StartupError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
