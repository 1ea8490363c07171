import FerryEngine
import FerryProtocol
import FerrySystem
import Glibc
import Logging
import Synchronization

/// The FUSE-over-io_uring transport (protocol/fuse-uring.md): one queue per possible CPU, each
/// a thread pinned to its CPU with its own ring of `depth` entries. INIT, FORGET, INTERRUPT and
/// notifications stay on /dev/fuse (DevFuseServer runs both).
public final class FUSERingServer: Sendable {
    /// Entries per queue unless told otherwise.
    public static let defaultDepth = 16

    private let queues: [FUSERingQueue]
    private let threads = Mutex<[HostThread]>([])
    private let logger: Logger

    /// Prepares `queueCount` queues (one per possible CPU) on the connection `deviceFD`, whose
    /// INIT reply already took FUSE_OVER_IO_URING. `helper` makes the queues' nudges when the
    /// server is sandboxed (MOUNTPOINT has no path then).
    public init(engine: FUSEEngine, deviceFD: Int32, mountpoint: String, helper: HostHelper? = nil, session: Negotiated, depth: Int = defaultDepth,
                queueCount: Int = HostThread.configuredCPUs, logger: Logger) throws(Errno) {
        let maxPages = UInt16(engine.options.maxWrite / 4096)
        let payload = FUSERingABI.payloadSize(maxWrite: engine.options.maxWrite, maxPages: maxPages)
        var queues: [FUSERingQueue] = []
        for qid in 0..<queueCount {
            queues.append(try FUSERingQueue(qid: qid, depth: depth, engine: engine, deviceFD: deviceFD,
                                            payloadSize: payload, mountpoint: mountpoint, helper: helper, logger: logger))
        }
        self.queues = queues
        self.logger = logger
    }

    /// Starts the queue threads and waits until each has registered its entries; throws the
    /// first failure (the queues that did start keep running until `stop`).
    public func start() throws {
        // qid -> "" (registered) or why not.
        let results = HostCondition<[Int: String]>([:])
        for queue in queues {
            let thread = try HostThread.spawn(name: "ferry-ring-\(queue.qid)") {
                queue.run(registered: { error in results.update { $0[queue.qid] = error.map { "queue \(queue.qid): \($0)" } ?? "" } })
                results.update { if $0[queue.qid] == nil { $0[queue.qid] = "queue \(queue.qid) ended early" } }
            }
            threads.withLock { $0.append(thread) }
        }
        results.wait { $0.count == queues.count }
        let failure = results.update { all in all.sorted { $0.key < $1.key }.map(\.value).first { !$0.isEmpty } }
        if let failure { throw MountError("registering the io_uring queues failed: \(failure)") }
        logger.info("transport io_uring: \(queues.count) queue(s) of \(queues.first?.depth ?? 0) entries, one per CPU")
    }

    /// Tells every queue thread to leave (after the connection ended).
    public func stop() { queues.forEach { $0.stop() } }

    /// Waits for the queue threads.
    public func join() { threads.withLock { $0 }.forEach { $0.join() } }

    /// Makes the kernel give up the rings of a connection whose INIT took OVER_IO_URING but
    /// whose queues could not all register: a REGISTER it refuses (a payload buffer below its
    /// minimum) turns the connection's io_uring off, and requests then come on /dev/fuse.
    static func giveUpRings(deviceFD: Int32) {
        guard let ring = try? CommandRing(entries: 2, completions: 4), (try? ring.registerFixedFile(deviceFD)) != nil
        else { return }
        let entry = FUSERingEntry(index: 0, payloadSize: MessageBuffer.pageSize)
        _ = ring.queueCommand(.register, iovecs: entry.iovecs, commitID: 0, queueID: 0, userData: 0)
        _ = ring.submitAndWait()
        var completions: [CommandRing.Completion] = []
        ring.reap(into: &completions)
        withExtendedLifetime(entry) {}
    }

    /// Requests answered through the rings so far.
    public var requestsServed: Int { queues.reduce(0) { $0 + $1.served.load(ordering: .relaxed) } }
}
