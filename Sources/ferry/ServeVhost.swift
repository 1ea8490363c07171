import ArgumentParser
import FerryEngine
import FerryFS
import FerrySandbox
import FerrySystem
import FerryVhost
import Glibc
import Logging

/// `ferry serve SOURCE --socket-path SOCK [--tag NAME] [--persist]`: serve SOURCE to a VM as a
/// vhost-user-fs back-end (protocol/vhost-user.md). The guest mounts it with
/// `mount -t virtiofs TAG /mnt`; there is no host mount.
extension Serve {
    /// MOUNTPOINT xor --socket-path, and no option that cannot apply to a VM.
    func validateTransport() throws {
        if socketPath != nil && listenFD != nil { throw ValidationError("give --socket-path or --fd, not both") }
        guard socketPath != nil || listenFD != nil else {
            if mountpointArgument == nil { throw ValidationError("Missing expected argument '<mountpoint>' (or --socket-path to serve a VM)") }
            for (given, name) in [(tag != nil, "--tag"), (persist, "--persist")] where given {
                throw ValidationError("\(name) applies only with --socket-path")
            }
            return
        }
        if mountpointArgument != nil { throw ValidationError("--socket-path serves a VM, which has no MOUNTPOINT: give one or the other") }
        let list: MountOptionList
        do { list = try MountOptionList(mountOptions) } catch { throw ValidationError(error.description) }
        let refused: [(Bool, String)] = [
            (allowOther != nil, "--allow-other/--no-allow-other (the guest decides who may use its mount)"),
            (notify == true, "--notify (virtio-fs has no notification queue: a guest's caches follow the cache timeouts)"),
            (notifyWatcher != .auto, "--notify-watcher"),
            (readyFd != nil, "--ready-fd"),
            (threads != nil, "--threads (each virtqueue has its own thread)"),
            (transport != .auto, "--transport (a VM's requests come through its virtqueues)"),
            (stats, "--stats (there are no change notifications to count)"),
            (idmappedMounts, "--idmapped-mounts (an idmapped mount in the guest is the guest's business; Ferry offers it on its own mounts)"),
            (list.noSuid || list.noDev || list.noExec || list.sync || list.dirSync,
             "-o nosuid/nodev/noexec/sync/dirsync (give them to the guest's mount)"),
            (list.atime != nil || list.noDirAtime, "-o atime options (give them to the guest's mount)"),
        ]
        for (given, what) in refused where given {
            throw ValidationError("\(what) cannot apply with --socket-path")
        }
    }

    func serveVhost(socketPath: String, _ list: MountOptionList, logger: Logger) throws {
        var st = stat()
        guard stat(source, &st) == 0 else { throw StartupError("source \(source): \(Errno.current)") }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw StartupError("source \(source) is not a directory") }
        if explain {
            print("ferry serve \(source) --socket-path \(socketPath) would run with:")
            print("  transport: vhost-user (virtio-fs), passthrough off (a VM's I/O comes through the virtqueues), change notifications off (no virtio-fs notification queue)")
            print("  I/O engine: \((try AutoConfiguration(self)).ioEngine), cache \(cache.rawValue)\(readonly ? ", read-only" : "")")
            print("  \(explainResourceLimits())")
            try explainIDTranslation()
            return
        }
        let root = geteuid() == 0
        if !root {
            logger.notice("running as uid \(geteuid()), not root: every request runs with this user's rights (no credential switching)")
        }
        var fsOptions = FSOptions()
        fsOptions.readOnly = readonly
        fsOptions.xattr = !noXattr
        fsOptions.inodeFileHandles = inodeFileHandles
        fsOptions.writebackCache = writeback
        fsOptions.indexHandles = false
        var engineOptions = try sharedEngineOptions()
        engineOptions.passthrough = false       // the kernel that reads files is the guest's
        engineOptions.notifications = false     // nothing can carry them to a guest
        engineOptions.ioEngine = (try AutoConfiguration(self)).ioEngine
        engineOptions.ioDepth = ioDepth
        engineOptions.callerPIDsAreHostPIDs = false
        try applyDescriptorLimit(logger: logger)
        fsOptions.limits = resourceLimits(logger: logger)
        let inodeFileHandles = self.inodeFileHandles
        let makeEngine = { (source: String) throws -> FUSEEngine in
            let fs: PassthroughFS
            do {
                fs = try PassthroughFS(source: source, options: fsOptions, logger: logger)
            } catch {
                if inodeFileHandles == .mandatory && (error as? Errno)?.rawValue == EOPNOTSUPP {
                    throw StartupError("\(source) does not support file handles, but --inode-file-handles mandatory was given")
                }
                throw StartupError("cannot open source \(source): \(error)")
            }
            return FUSEEngine(fs: fs, options: engineOptions, logger: logger)
        }
        let probe = try makeEngine(source)   // fail at start-up, not when the guest connects
        let signals = SignalWaiter(signals: SignalWaiter.serverSignals)
        signal(SIGPIPE, SIG_IGN)
        // Each connection opens SOURCE afresh: by its path, or as "/" once SOURCE is the root.
        let servedPath = SandboxedPath(source)
        let server = VhostUserServer(socketPath: socketPath, persist: persist, logger: logger,
                                     makeEngine: { try makeEngine(servedPath.path) })
        if let listenFD {
            do { try server.adopt(listeningFD: listenFD) } catch {
                throw StartupError("--fd \(listenFD) is not a listening socket: \(error)")
            }
        } else {
            do { try server.listen() } catch {
                throw StartupError("cannot listen on \(socketPath): \(error)")
            }
        }
        var setting = SandboxSetting(sourceFD: probe.fs.rootDirectory.rawValue, mount: nil)
        setting.vhost = server
        setting.socketFile = listenFD == nil ? socketPath : nil   // a supervisor's socket stays its own
        setting.capabilities.credentialSwitching = root
        setting.capabilities.fileHandles = inodeFileHandles != .never
        if try enterSandbox(setting, root: root, logger: logger) != .none {
            servedPath.path = "/"
        }
        withExtendedLifetime(probe) {}
        try signals.start { signal in
            if signal == SIGUSR1 { return }
            logger.info("signal \(signal) received")
            server.stop()
        }
        logger.info("configuration: vhost-user, I/O engine \(engineOptions.ioEngine), passthrough off, change notifications off")
        logIDTranslation(engineOptions, logger: logger)
        logger.info("serving \(source) to a VM on \(listenFD.map { "fd \($0)" } ?? socketPath)\(tag.map { " (tag \($0))" } ?? "") (cache \(cache.rawValue)\(readonly ? ", read-only" : ""))")
        try server.run()
        logger.info("exiting")
    }
}

/// Where a VM's connections open SOURCE: its path, or "/" once the sandbox made it the root.
/// Set once on the main thread before any connection is accepted.
final class SandboxedPath: @unchecked Sendable {
    var path: String
    init(_ path: String) { self.path = path }
}
