import FerryEngine
import FerrySystem
import Glibc
import Logging

/// What Ferry offers the front-end.
public enum VhostOffer {
    /// Virtio features: VERSION_1, INDIRECT_DESC, EVENT_IDX, and vhost-user's PROTOCOL_FEATURES.
    public static let features: UInt64 = VirtioFeature.version1 | VirtioFeature.indirectDescriptors
        | VirtioFeature.eventIndex | VirtioFeature.protocolFeatures
    /// Protocol features: MQ (bit 0), REPLY_ACK (bit 3) and CONFIGURE_MEM_SLOTS (bit 15).
    public static let protocolMQ: UInt64 = 1 << 0
    public static let protocolReplyAck: UInt64 = 1 << 3
    /// CONFIGURE_MEM_SLOTS (bit 15): GET_MAX_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG.
    public static let protocolConfigureMemSlots: UInt64 = 1 << 15
    public static let protocolFeatures: UInt64 = protocolMQ | protocolReplyAck | protocolConfigureMemSlots
    /// Memory regions Ferry maps at once with CONFIGURE_MEM_SLOTS (GET_MAX_MEM_SLOTS): QEMU lets
    /// the guest have that many memory slots (DIMMs, plus the regions of its base memory).
    public static let maxMemSlots = 32
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
        case .getMaxMemSlots:
            return .reply(VhostDecoder.u64Payload(UInt64(VhostOffer.maxMemSlots)))
        case let .addMemReg(region, fds):
            return .done(addRegion(region, fds: fds))
        case let .remMemReg(region, fds):
            fds.forEach { _ = Glibc.close($0) }   // the spec allows one; it is not used
            return .done(removeRegion(region))
        }
    }

    /// ADD_MEM_REG: maps one more region (its fd is closed once mapped) and hands the table
    /// with it to the running queues. A message that cannot be honoured (no or several
    /// descriptors, a bad or overlapping region, no slot left, a failed mmap) is refused alone:
    /// logged, answered 1 with REPLY_ACK, and the table stays as it was.
    private func addRegion(_ region: MemoryRegion, fds: [Int32]) -> Bool {
        defer { fds.forEach { _ = Glibc.close($0) } }
        func refuse(_ why: String) -> Bool {
            logger.error("vhost-user ADD_MEM_REG refused: \(why)")
            return false
        }
        guard protocolFeatures & VhostOffer.protocolConfigureMemSlots != 0 else {
            return refuse("CONFIGURE_MEM_SLOTS was not negotiated")
        }
        guard fds.count == 1 else {
            return refuse(fds.isEmpty ? "no file descriptor for the region" : "\(fds.count) file descriptors (one expected)")
        }
        let described = Self.describe(region)
        if let why = region.invalidity { return refuse("region \(described) \(why)") }
        let current = memory?.regions ?? []
        guard current.count < VhostOffer.maxMemSlots else {
            return refuse("all \(VhostOffer.maxMemSlots) memory slots are in use (GET_MAX_MEM_SLOTS)")
        }
        if let other = current.first(where: { $0.region.overlapsGuest(region) || $0.region.overlapsUser(region) }) {
            return refuse("region \(described) overlaps region \(Self.describe(other.region))")
        }
        let length = region.size + region.mmapOffset   // checked by `invalidity`: below 2^63
        guard let mapping = RegionMapping.map(fd: fds[0], length: Int(length)) else {
            return refuse("cannot map \(length) bytes of region \(described): \(Errno.current)")
        }
        let mapped = GuestMemory.Mapped(region: region, host: mapping.base + Int(region.mmapOffset), mapping: mapping)
        install(GuestMemory(regions: current + [mapped]))
        logger.info("vhost-user: region \(described) added (\(region.size >> 20) MiB), \(current.count + 1) region(s)")
        return true
    }

    /// REM_MEM_REG: drops the region with the same guest address, size and front-end address
    /// (the spec's match; mmap_offset is ignored). The running queues switch to the table without
    /// it before the reply; the region is unmapped once no chain taken through it is in flight.
    private func removeRegion(_ region: MemoryRegion) -> Bool {
        let described = Self.describe(region)
        guard protocolFeatures & VhostOffer.protocolConfigureMemSlots != 0 else {
            logger.error("vhost-user REM_MEM_REG refused: CONFIGURE_MEM_SLOTS was not negotiated")
            return false
        }
        let current = memory?.regions ?? []
        guard let at = current.firstIndex(where: {
            $0.region.guestAddress == region.guestAddress && $0.region.size == region.size
                && $0.region.userAddress == region.userAddress
        }) else {
            logger.error("vhost-user REM_MEM_REG refused: no region \(described) is mapped")
            return false
        }
        var rest = current
        rest.remove(at: at)
        install(rest.isEmpty ? nil : GuestMemory(regions: rest))
        logger.info("vhost-user: region \(described) removed, \(rest.count) region(s) left")
        return true
    }

    /// Makes `newMemory` the connection's table: queues that run switch to it between chains
    /// (their chains in flight finish on the old one; nothing is stopped, no lock wait ends),
    /// queues waiting for memory start on it.
    private func install(_ newMemory: GuestMemory?) {
        memory = newMemory
        guard let newMemory else { return }   // the last region went: running queues keep theirs
        for i in vrings.indices {
            if let runner = vrings[i].runner {
                if !runner.switchMemory(newMemory) {
                    logger.warning("vhost-user: queue \(i) did not take the new memory table within 30 s")
                }
            } else {
                _ = startIfReady(i)
            }
        }
    }

    static func describe(_ region: MemoryRegion) -> String {
        "[0x\(String(region.guestAddress, radix: 16)), +0x\(String(region.size, radix: 16))) at 0x\(String(region.userAddress, radix: 16))"
    }

    /// Maps the regions of a new memory table (each fd is closed once mapped). Queues that run
    /// switch to it between chains, without stopping (QEMU sends a whole table on memory
    /// hot-plug when CONFIGURE_MEM_SLOTS is not negotiated); the old mappings go when the last
    /// chain taken through them is answered.
    private func setMemoryTable(_ regions: [MemoryRegionMessage]) -> Bool {
        var mapped: [GuestMemory.Mapped] = []
        var ok = true
        for r in regions {
            let length = r.region.size + r.region.mmapOffset   // checked in the decoder: no overflow, < 2^63
            let mapping = RegionMapping.map(fd: r.fd, length: Int(length))
            Glibc.close(r.fd)
            guard let mapping else {
                logger.error("vhost-user SET_MEM_TABLE: cannot map a region of \(length) bytes: \(Errno.current)")
                ok = false
                continue
            }
            mapped.append(GuestMemory.Mapped(region: r.region, host: mapping.base + Int(r.region.mmapOffset), mapping: mapping))
        }
        guard ok else { return false }   // what was mapped is unmapped with `mapped`
        let running = vrings.indices.filter { vrings[$0].runner != nil }
        install(GuestMemory(regions: mapped))
        if !running.isEmpty {
            logger.info("vhost-user: new memory table while queue(s) \(running) ran: they switched to it without stopping")
        }
        let total = regions.reduce(UInt64(0)) { $0 + $1.region.size }
        logger.info("vhost-user: guest memory of \(total >> 20) MiB in \(regions.count) region(s)")
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
        case let .addMemReg(r, fds), let .remMemReg(r, fds): return "\(Self.describe(r)) offset 0x\(String(r.mmapOffset, radix: 16)), \(fds.count) fd(s)"
        default: return ""
        }
    }
}
