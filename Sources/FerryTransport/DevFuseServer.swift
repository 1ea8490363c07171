import FerryEngine
import FerryProtocol
import FerrySystem
import Glibc
import Logging
import Synchronization

/// How requests reach Ferry after INIT.
public enum Transport: Sendable, Equatable {
    /// read(2) on /dev/fuse descriptors.
    case devFuse
    /// FUSE-over-io_uring queues of `depth` entries (the engine must ask for OVER_IO_URING).
    /// `required`: a connection that cannot use them is a start-up error; otherwise Ferry
    /// serves over /dev/fuse and says why in one log line.
    case ring(depth: Int, required: Bool)
}

/// Serves a mounted FUSE file system over /dev/fuse: answers INIT, then runs `threads` reader
/// threads, each blocked in read(2) on its own cloned descriptor, until the kernel ends the
/// connection (unmount or abort). With the io_uring transport, the rings carry the requests and
/// a few readers stay for what the kernel still sends on /dev/fuse (FORGET, INTERRUPT, requests
/// before the rings are ready).
public final class DevFuseServer: Sendable {
    let engine: FUSEEngine
    let mount: FUSEMount
    let threads: Int
    let transport: Transport
    let logger: Logger
    /// /dev/fuse readers kept beside the rings.
    static let readersBesideRings = 2
    /// The ring queues, while they run.
    private let rings = Mutex<FUSERingServer?>(nil)
    /// Requests read from /dev/fuse (INIT not counted).
    private let devRequests = Atomic<Int>(0)
    /// Reads of /dev/fuse by the readers that found no request (EAGAIN, EINTR, ENOENT).
    private let emptyReads = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Set when readers must leave even though the kernel still has the connection open.
    private let abandoning = Atomic<Bool>(false)
    private let readers = Mutex<[HostThread]>([])
    /// Each reader's kick (as its worker has it), for the abandoning stop.
    private let readerKicks = Mutex<[@Sendable () -> Void]>([])
    /// Readers started and not yet returned.
    private let readersRunning = Atomic<Int>(0)

    public init(engine: FUSEEngine, mount: FUSEMount, threads: Int, transport: Transport = .devFuse, logger: Logger) {
        self.engine = engine
        self.mount = mount
        self.threads = max(1, threads)
        self.transport = transport
        self.logger = logger
    }

    /// Serves until the connection ends. Throws when INIT fails or no thread can start.
    /// `onInitialized` runs once INIT is answered, before the readers start (e.g. to start
    /// sending notifications, which the kernel only takes after INIT). `onServing` runs once the
    /// readers are started, when the mount answers requests (e.g. to report readiness).
    public func run(onInitialized: (Negotiated) throws -> Void = { _ in },
                    onServing: () -> Void = {}) throws {
        engine.attachBackingDevice(mount.fd)   // passthrough backing files are registered on it
        try answerInit()
        // The rings first: once INIT took OVER_IO_URING the kernel holds every new request
        // until all queues are registered, and `onInitialized` may make requests (a stat).
        let ringServer = try startRings()
        if let session = engine.session { try onInitialized(session) }
        let threads = ringServer == nil ? self.threads : min(self.threads, DevFuseServer.readersBesideRings)
        var descriptors = [mount.fd]
        for _ in 1..<threads {
            do { descriptors.append(try DevFuseDevice.clone(mount.fd)) }
            catch {
                logger.warning("FUSE_DEV_IOC_CLONE failed (\(error)); the remaining readers share the session descriptor")
                descriptors.append(mount.fd)
            }
        }
        logger.info(ringServer == nil ? "serving with \(threads) reader thread(s)"
                                      : "serving through the io_uring queues, with \(threads) /dev/fuse reader thread(s) for FORGET and INTERRUPT")
        WakeSignal.install(WakeSignal.reader)
        for (index, fd) in descriptors.enumerated() {
            let ownDescriptor = descriptors.filter { $0 == fd }.count == 1
            readersRunning.add(1, ordering: .relaxed)
            do {
                let thread = try HostThread.spawn(name: "ferry-fuse-\(index)") { [self] in
                    defer { readersRunning.subtract(1, ordering: .relaxed) }
                    self.serve(fd: fd, otherReaders: threads > 1, ownDescriptor: ownDescriptor)
                }
                readers.withLock { $0.append(thread) }
            } catch {
                readersRunning.subtract(1, ordering: .relaxed)
                throw error
            }
        }
        onServing()
        readers.withLock { $0 }.forEach { $0.join() }
        for fd in Set(descriptors) where fd != mount.fd { Glibc.close(fd) }
        if let ringServer {
            ringServer.stop()
            ringServer.join()
            rings.withLock { $0 = nil }
            logger.info("transport totals: \(ringServer.requestsServed) request(s) through the io_uring queues, \(devRequests.load(ordering: .relaxed)) through /dev/fuse")
        }
        logger.info("reads of /dev/fuse: \(devRequests.load(ordering: .relaxed)) found a request, \(emptyReads.load(ordering: .relaxed)) found none")
        logger.info("connection closed; \(engine.fs.inodes.count) node(s), \(engine.fs.openFiles.count) open file(s) and \(engine.passthroughBackingIDs) passthrough backing id(s) were still known")
    }

    /// Starts an orderly stop: detaches the mount so readers drain and exit. If the kernel keeps
    /// the connection (files still open through the mount) the connection is aborted after
    /// `grace` seconds.
    public func stop(grace: UInt32 = 3) {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        logger.info("unmounting \(mount.mountpoint)")
        mount.detach()
        _ = try? HostThread.spawn(name: "ferry-stop") { [self] in
            sleep(grace)
            logger.warning("connection still open \(grace) s after unmount (files held open?); aborting it")
            mount.abortConnection()
            // Without fusectl, leave anyway: wake the readers, and closing the last /dev/fuse
            // descriptor makes the kernel abort the connection. One signal to every reader also
            // ends a handler's system call stuck at this point (EINTR); a kick can be lost (see
            // InterruptibleRead), so kick until every reader has returned.
            abandoning.store(true, ordering: .relaxed)
            rings.withLock { $0 }?.stop()
            readers.withLock { $0 }.forEach { $0.signal(WakeSignal.reader) }
            while readersRunning.load(ordering: .relaxed) > 0 {
                readerKicks.withLock { $0 }.forEach { $0() }
                usleep(10_000)
            }
        }
    }

    /// Writes one notification (unique 0) on the session descriptor; returns 0 or the errno
    /// (ENOENT: the kernel no longer has the node or name, which is not a failure).
    /// Safe from any thread, but never from a request handler: the kernel may wait for a
    /// reply that handler would send.
    public func sendNotification(_ message: ByteView) -> Int32 {
        DevFuseDevice.send(mount.fd, message)
    }

    /// Starts the ring queues when the transport asks for them and INIT agreed to them; nil
    /// when requests stay on /dev/fuse (logged, or thrown when the rings were required).
    private func startRings() throws -> FUSERingServer? {
        guard case let .ring(depth, required) = transport, let session = engine.session else { return nil }
        guard session.flags.contains(.overIOUring) else {
            let why = "the kernel did not offer FUSE_OVER_IO_URING at INIT (is /sys/module/fuse/parameters/enable_uring on?)"
            if required { throw MountError("--transport uring: \(why)") }
            logger.info("transport /dev/fuse: \(why)")
            return nil
        }
        let server: FUSERingServer
        do {
            server = try FUSERingServer(engine: engine, deviceFD: mount.fd, mountpoint: mount.mountpoint, helper: mount.helper, session: session, depth: depth, logger: logger)
            rings.withLock { $0 = server }
            try server.start()
            return server
        } catch {
            // INIT took OVER_IO_URING, so the kernel holds every request until all queues are
            // registered; a refused REGISTER makes it give the rings up and use /dev/fuse.
            rings.withLock { $0 }?.stop()
            FUSERingServer.giveUpRings(deviceFD: mount.fd)
            if required { throw MountError("--transport uring: \(error)") }
            logger.warning("transport /dev/fuse: \(error)")
            return nil
        }
    }

    private func answerInit() throws {
        let worker = engine.makeWorker()
        let buffer = worker.requestBuffer
        while engine.session == nil {
            switch DevFuseDevice.read(mount.fd, into: buffer) {
            case .retry: continue
            case .closed: throw MountError("the kernel closed the connection before INIT")
            case let .request(n):
                let result = engine.handle(buffer.view(count: n), worker: worker)
                if case let .reply(bytes) = result {
                    guard DevFuseDevice.write(mount.fd, bytes) else { throw MountError("the connection closed during INIT") }
                    // An error reply to INIT makes the kernel give up the connection.
                    if bytes.load(Int32.self, at: 4) != 0 { throw MountError("INIT failed; see the log") }
                }
            }
        }
    }

    /// One reader thread's loop. `otherReaders`: other threads read requests from the same
    /// connection, so this one may wait for its own data requests instead of for new requests.
    /// `ownDescriptor`: no other reader reads `fd` (a clone of its own).
    ///
    /// Alone (or sharing its descriptor), a reader waits for requests and for its I/O
    /// completions at once, in epoll. With other readers, one that has nothing in flight sleeps
    /// in read(2) itself, where the kernel wakes only readers asleep in it, one per request. (A
    /// reader's epoll is also marked ready for requests that arrive while the reader is busy;
    /// back in epoll_wait it then races the reader the kernel woke for them: a wasted wake-up
    /// and a failed read per request.) With data in flight it reads without blocking while
    /// requests are queued, so that many go into one I/O submission, and otherwise waits for
    /// its completions.
    private func serve(fd: Int32, otherReaders: Bool, ownDescriptor: Bool) {
        let sleepsInRead = otherReaders && ownDescriptor   // then it switches O_NONBLOCK
        let wait: RequestWait?
        var nonBlocking = !sleepsInRead
        let blockingFlags: Int32   // the descriptor's status flags without O_NONBLOCK
        do {
            blockingFlags = try Host.statusFlags(fd) & ~O_NONBLOCK
            if nonBlocking { try Host.setStatusFlags(fd, blockingFlags | O_NONBLOCK) }
            wait = sleepsInRead ? nil : try RequestWait(fuseFD: fd)
        } catch {
            logger.error("reader cannot wait for requests on /dev/fuse: \(error)")
            return
        }
        let blockingRead = InterruptibleRead()
        let kick: @Sendable () -> Void = if let wait { { wait.kick() } } else { { blockingRead.interrupt() } }
        readerKicks.withLock { $0.append(kick) }
        let worker = engine.makeWorker(deferredReplies: { [logger] bytes in
            let written = bytes.withUnsafeBytes { DevFuseDevice.write(fd, ByteView($0)) }
            if !written { logger.error("writing a deferred reply failed: \(Errno.current)") }
        }, notifications: { message in DevFuseDevice.send(fd, message) }, kick: kick)
        if let wait, let completions = worker.completionFD {
            do { try wait.watchCompletions(completions) } catch {
                logger.error("reader cannot wait for I/O completions: \(error)")
                engine.retire(worker)
                return
            }
        }
        let send = { (reply: ByteView) in DevFuseDevice.write(fd, reply) }
        defer {
            engine.drainData(worker, send: send)   // the kernel may still write into their buffers
            engine.retire(worker)
        }
        /// Switches the descriptor between blocking and non-blocking reads when it must change.
        func setNonBlocking(_ on: Bool) -> Bool {
            guard on != nonBlocking else { return true }
            do { try Host.setStatusFlags(fd, on ? blockingFlags | O_NONBLOCK : blockingFlags) } catch {
                logger.error("reader cannot switch /dev/fuse to \(on ? "non-" : "")blocking reads: \(error)")
                return false
            }
            nonBlocking = on
            return true
        }
        var awaitData = false
        var readFirst = ReadFirstPolicy()
        while !abandoning.load(ordering: .relaxed) {
            // readFirst's answer for this round, when it is asked before the replies: a reader
            // that sleeps in read(2) and has data in flight, but would not read first (the last
            // read found no request), waits for its data at once. The io_uring_enter that waits
            // then also submits what the last request queued: one system call per request at
            // queue depth 1, where a submission here and the wait after the read made two.
            var readsFirst: Bool?
            if sleepsInRead, !awaitData, worker.canTakeRequest, worker.dataInFlight > 0 {
                readsFirst = readFirst.shouldTry()
                awaitData = readsFirst == false
            }
            // Replies of data requests the I/O engine finished; with every slot in flight, or
            // when there was no request to read, wait for one.
            guard engine.completeData(worker, wait: awaitData || !worker.canTakeRequest, send: send) else { return }
            awaitData = false
            guard worker.canTakeRequest else { continue }
            let buffer = worker.requestBuffer
            engine.waitingForRequest(worker)
            // Under load a request is often already queued: read first (without blocking),
            // sleep only when there is none. One request at a time (a client waiting for each
            // reply) finds none, and the read would cost a system call: then go straight to
            // sleep (readFirst says which). A reader with nothing in flight that did not just
            // find requests sleeps in read(2), which returns at once if one is queued.
            var result = DevFuseDevice.ReadResult.retry
            if wait != nil || worker.dataInFlight > 0 || nonBlocking, readsFirst ?? readFirst.shouldTry() {
                guard setNonBlocking(true) else { return }
                result = counted(DevFuseDevice.read(fd, into: buffer))
                readFirst.record(found: !result.isRetry)
            }
            if case .retry = result {
                if let wait, !(otherReaders && worker.dataInFlight > 0) {
                    if worker.prepareToSleep(), let woken = wait.wait(), woken.requestReady {
                        result = counted(DevFuseDevice.read(fd, into: buffer))   // .retry if another reader took it
                    }
                } else if worker.dataInFlight > 0 {
                    // Wait for the data's completion in the I/O engine (as the sync engine's
                    // thread would, in its syscall) while the other readers take new requests.
                    awaitData = true
                } else {
                    guard setNonBlocking(false) else { return }
                    result = counted(blockingRead.read(fd, into: buffer))
                }
            }
            if case let .request(n) = result {
                engine.stoppedWaiting(worker, request: buffer.view(count: n))
            } else {
                engine.stoppedWaiting(worker, request: nil)
            }
            switch result {
            case .retry: break   // (the loop's condition notices an abandoned connection)
            case .closed: return
            case let .request(n):
                if case let .reply(bytes) = engine.handle(buffer.view(count: n), worker: worker) {
                    if !send(bytes) { return }
                }
            }
        }
    }
}

extension DevFuseServer {
    /// Counts what a reader's read of /dev/fuse found, for the totals at the end.
    private func counted(_ result: DevFuseDevice.ReadResult) -> DevFuseDevice.ReadResult {
        switch result {
        case .request: devRequests.add(1, ordering: .relaxed)
        case .retry: emptyReads.add(1, ordering: .relaxed)
        case .closed: break
        }
        return result
    }
}

/// Whether a reader reads /dev/fuse before sleeping: on while such reads find requests
/// queued, off after one finds none, with one read in `probeInterval` to notice the load
/// returning (a sleep then costs nothing more: the level-triggered wait returns at once).
struct ReadFirstPolicy {
    static let probeInterval = 8
    private var on = true
    private var skipped = 0

    mutating func shouldTry() -> Bool {
        if on { return true }
        skipped += 1
        if skipped < ReadFirstPolicy.probeInterval { return false }
        skipped = 0
        return true
    }

    mutating func record(found: Bool) { on = found }
}
