import FerryEngine
import FerrySystem
import Glibc
import Logging

/// What Ferry offers the front-end.
public enum VhostOffer {
    /// Virtio features: VERSION_1, INDIRECT_DESC, EVENT_IDX, and vhost-user's PROTOCOL_FEATURES.
    public static let features: UInt64 = VirtioFeature.version1 | VirtioFeature.indirectDescriptors
        | VirtioFeature.eventIndex | VirtioFeature.protocolFeatures
    /// Protocol features: MQ (bit 0) and REPLY_ACK (bit 3).
    public static let protocolMQ: UInt64 = 1 << 0
    public static let protocolReplyAck: UInt64 = 1 << 3
    public static let protocolFeatures: UInt64 = protocolMQ | protocolReplyAck
    /// Queues: the hiprio queue and up to 16 request queues.
    public static let maxQueues = 17
}

/// One front-end connection: the vhost-user state machine (features, memory table, vrings) and
/// the queue threads it starts. Runs on the thread that accepted the connection; ends when the
/// front-end disconnects or breaks the protocol, and then releases everything it held.
final class VhostConnection {
    let channel: VhostChannel
    let logger: Logger
    private let makeEngine: () throws -> FUSEEngine
    private var engine: FUSEEngine?
    /// Every queue stopped since the engine last served: the next start decides whether the
    /// guest resumes (same engine) or was reset (a fresh engine; see `startIfReady`).
    private var engineSpent = false
    private var features: UInt64 = 0
    private var protocolFeatures: UInt64 = 0
    private var memory: GuestMemory?
    private var vrings: [Vring]
    /// Whether any queue thread ever ran (the guest used the device).
    private(set) var deviceRan = false

    struct Vring {
        var size = 0
        var base: UInt16 = 0
        var address: VringAddress?
        var kick: Int32?
        let call = CallEvent()
        var err: Int32?
        var enabled = false
        var runner: QueueRunner?
        var failed = false
    }

    init(channel: VhostChannel, logger: Logger, makeEngine: @escaping () throws -> FUSEEngine) {
        self.channel = channel
        self.logger = logger
        self.makeEngine = makeEngine
        vrings = (0..<VhostOffer.maxQueues).map { _ in Vring() }
    }

    /// Serves messages until the connection ends; throws the protocol error that ended it.
    func serve() throws {
        defer { release() }
        while true {
            let header: VhostHeader, message: VhostMessage
            switch try channel.read() {
            case .closed:
                logger.info("vhost-user front-end disconnected")
                return
            case let .message(h, m):
                header = h
                message = m
            }
            logger.debug("vhost-user \(VhostRequest(rawValue: header.request)!) \(describe(message))")
            let outcome: Outcome
            do {
                outcome = try handle(message)
            } catch let error as VhostError {
                message.fds.forEach { _ = Glibc.close($0) }
                throw error
            }
            switch outcome {
            case let .reply(payload):
                guard channel.send(VhostDecoder.reply(to: header.request, payload: payload)) else { return }
            case let .done(ok):
                if !ok { logger.warning("vhost-user \(VhostRequest(rawValue: header.request)!) failed") }
                if header.needsReply && protocolFeatures & VhostOffer.protocolReplyAck != 0 {
                    guard channel.send(VhostDecoder.reply(to: header.request, payload: VhostDecoder.u64Payload(ok ? 0 : 1))) else { return }
                }
            }
        }
    }

    enum Outcome {
        case reply([UInt8])
        case done(Bool)
    }

    private func vringIndex(_ index: UInt32, _ request: VhostRequest) throws(VhostError) -> Int {
        guard index < UInt32(vrings.count) else {
            throw .invalidField(request, "queue \(index) (Ferry has \(vrings.count))")
        }
        return Int(index)
    }

    private func handle(_ message: VhostMessage) throws -> Outcome {
        switch message {
        case .getFeatures:
            return .reply(VhostDecoder.u64Payload(VhostOffer.features))
        case let .setFeatures(value):
            guard value & ~VhostOffer.features == 0 else {
                throw VhostError.invalidField(.setFeatures, "features 0x\(String(value, radix: 16)) were not offered")
            }
            features = value
            return .done(true)
        case .getProtocolFeatures:
            return .reply(VhostDecoder.u64Payload(VhostOffer.protocolFeatures))
        case let .setProtocolFeatures(value):
            guard value & ~VhostOffer.protocolFeatures == 0 else {
                throw VhostError.invalidField(.setProtocolFeatures, "protocol features 0x\(String(value, radix: 16)) were not offered")
            }
            protocolFeatures = value
            return .done(true)
        case .getQueueNum:
            return .reply(VhostDecoder.u64Payload(UInt64(vrings.count)))
        case .setOwner:
            return .done(true)
        case .resetOwner, .resetDevice:
            stopAll()
            for i in vrings.indices { closeFDs(i); vrings[i] = Vring() }
            features = 0
            return .done(true)
        case let .setMemTable(regions):
            return .done(setMemoryTable(regions))
        case let .setVringNum(state):
            let i = try vringIndex(state.index, .setVringNum)
            let n = Int(state.num)
            guard n > 0, n <= SplitQueue.maxSize, n & (n - 1) == 0 else {
                throw VhostError.invalidField(.setVringNum, "queue size \(n) is not a power of two up to \(SplitQueue.maxSize)")
            }
            vrings[i].size = n
            return .done(true)
        case let .setVringBase(state):
            let i = try vringIndex(state.index, .setVringBase)
            guard state.num <= UInt32(UInt16.max) else { throw VhostError.invalidField(.setVringBase, "base \(state.num)") }
            vrings[i].base = UInt16(state.num)
            return .done(true)
        case let .setVringAddr(address):
            let i = try vringIndex(address.index, .setVringAddr)
            guard address.flags & 1 == 0 else { throw VhostError.invalidField(.setVringAddr, "dirty logging was not offered") }
            vrings[i].address = address
            return .done(true)
        case let .getVringBase(state):
            let i = try vringIndex(state.index, .getVringBase)
            stop(i)
            // The ring is stopped; its kick descriptor is no longer used.
            if let kick = vrings[i].kick { Glibc.close(kick) }
            vrings[i].kick = nil
            return .reply(VhostDecoder.statePayload(VringState(index: state.index, num: UInt32(vrings[i].base))))
        case let .setVringKick(file):
            let i = try vringIndex(file.index, .setVringKick)
            guard let fd = file.fd else {
                throw VhostError.invalidField(.setVringKick, "polling mode (no kick descriptor) is not supported")
            }
            stop(i)
            if let old = vrings[i].kick { Glibc.close(old) }
            vrings[i].kick = fd
            if features & VirtioFeature.protocolFeatures == 0 { vrings[i].enabled = true }
            return .done(startIfReady(i))
        case let .setVringCall(file):
            let i = try vringIndex(file.index, .setVringCall)
            vrings[i].call.replace(file.fd)
            return .done(true)
        case let .setVringErr(file):
            let i = try vringIndex(file.index, .setVringErr)
            if let old = vrings[i].err { Glibc.close(old) }
            vrings[i].err = file.fd
            return .done(true)
        case let .setVringEnable(state):
            let i = try vringIndex(state.index, .setVringEnable)
            guard state.num <= 1 else { throw VhostError.invalidField(.setVringEnable, "enable value \(state.num)") }
            vrings[i].enabled = state.num == 1
            if state.num == 0 { stop(i); return .done(true) }
            return .done(startIfReady(i))
        case .getConfig:
            throw VhostError.unsupportedRequest(.getConfig)   // CONFIG is not offered: QEMU owns the config space
        }
    }

    /// Maps the regions of a new memory table (each fd is closed once mapped).
    private func setMemoryTable(_ regions: [MemoryRegionMessage]) -> Bool {
        var mapped: [GuestMemory.Mapped] = []
        var mappings: [(UnsafeMutableRawPointer, Int)] = []
        var ok = true
        for r in regions {
            let length = r.region.size + r.region.mmapOffset   // checked in the decoder: no overflow, < 2^63
            let p = mmap(nil, Int(length), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, r.fd, 0)
            Glibc.close(r.fd)
            guard let p, p != MAP_FAILED else {
                logger.error("vhost-user SET_MEM_TABLE: cannot map a region of \(length) bytes: \(Errno.current)")
                ok = false
                continue
            }
            mappings.append((p, Int(length)))
            mapped.append(GuestMemory.Mapped(region: r.region, host: p + Int(r.region.mmapOffset)))
        }
        guard ok else {
            for (p, n) in mappings { munmap(p, n) }
            return false
        }
        // Queues running on the old table are quiesced (they stop taking chains, their data
        // requests in flight complete on the old mapping) and restart below on the new one where
        // they stopped, in the same FUSE session. The old mapping goes when the last of them lets go.
        let running = vrings.indices.filter { vrings[$0].runner != nil }
        for i in running { stop(i) }
        if !running.isEmpty {
            engineSpent = false
            logger.info("vhost-user: new memory table while queue(s) \(running) ran: quiesced, restarting them on it")
        }
        memory = GuestMemory(regions: mapped) { for (p, n) in mappings { munmap(p, n) } }
        let total = regions.reduce(UInt64(0)) { $0 + $1.region.size }
        logger.info("vhost-user: guest memory of \(total >> 20) MiB in \(regions.count) region(s)")
        for i in vrings.indices where vrings[i].runner == nil { _ = startIfReady(i) }
        return true
    }

    /// Starts queue `i`'s thread once it has memory, a size, addresses, a kick descriptor and is
    /// enabled; false if it cannot start.
    private func startIfReady(_ i: Int) -> Bool {
        guard vrings[i].runner == nil, vrings[i].enabled, let memory, let address = vrings[i].address,
              let kick = vrings[i].kick, vrings[i].size > 0 else { return true }
        do {
            if engine == nil || engineSpent {
                guard vrings.allSatisfy({ $0.runner == nil }) else { throw StartError("engine busy") }
                // Queues restarting where they stopped resume the guest's FUSE session (the VM
                // was paused); queues all starting at 0 are a reset device (a reboot), whose
                // guest sends INIT again: it gets a fresh engine, and the old session's inodes,
                // open files and host locks are released with the old one.
                if engine == nil || vrings.allSatisfy({ $0.base == 0 }) {
                    if engine != nil { logger.info("vhost-user: queues restart from 0 (device reset): new FUSE session") }
                    engine = nil
                    engine = try makeEngine()
                } else {
                    logger.info("vhost-user: queues resume where they stopped: same FUSE session")
                }
                engineSpent = false
            }
            let queue = try SplitQueue(memory: memory, size: vrings[i].size, address: address, base: vrings[i].base,
                                       eventIndex: features & VirtioFeature.eventIndex != 0,
                                       indirect: features & VirtioFeature.indirectDescriptors != 0)
            let runner = try QueueRunner(index: i, queue: queue, kickFD: kick, call: vrings[i].call, engine: engine!, logger: logger)
            try runner.start()
            vrings[i].runner = runner
            deviceRan = true
            logger.info("vhost-user: queue \(i) (\(i == 0 ? "hiprio" : "requests"), size \(vrings[i].size)) started at index \(vrings[i].base)")
            return true
        } catch {
            logger.error("vhost-user: queue \(i) cannot start: \(error)")
            return false
        }
    }

    struct StartError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Stops queue `i`'s thread, keeping where it stopped as the ring's base.
    private func stop(_ i: Int) {
        guard let runner = vrings[i].runner else { return }
        vrings[i].base = runner.stop()
        vrings[i].runner = nil
        logger.info("vhost-user: queue \(i) stopped at index \(vrings[i].base)")
        if vrings.allSatisfy({ $0.runner == nil }) { engineSpent = true }
    }

    private func stopAll() { for i in vrings.indices { stop(i) } }

    private func closeFDs(_ i: Int) {
        if let kick = vrings[i].kick { Glibc.close(kick) }
        if let err = vrings[i].err { Glibc.close(err) }
        vrings[i].kick = nil
        vrings[i].err = nil
        vrings[i].call.replace(nil)
    }

    /// Stops every queue and lets go of the memory, descriptors and the engine (with it the
    /// filesystem's inodes, open files and locks).
    private func release() {
        stopAll()
        for i in vrings.indices { closeFDs(i) }
        memory = nil
        engine = nil
    }

    private func describe(_ message: VhostMessage) -> String {
        switch message {
        case let .setFeatures(v), let .setProtocolFeatures(v): return "0x\(String(v, radix: 16))"
        case let .setVringNum(s), let .setVringBase(s), let .getVringBase(s), let .setVringEnable(s): return "queue \(s.index) \(s.num)"
        case let .setVringKick(f), let .setVringCall(f), let .setVringErr(f): return "queue \(f.index) fd \(f.fd.map(String.init) ?? "none")"
        case let .setVringAddr(a): return "queue \(a.index)"
        case let .setMemTable(r): return "\(r.count) region(s)"
        default: return ""
        }
    }
}
