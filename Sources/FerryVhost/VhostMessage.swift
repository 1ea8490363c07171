/// The vhost-user wire format (QEMU docs/interop/vhost-user.rst): a 12-byte header
/// `{ u32 request; u32 flags; u32 size }` followed by `size` payload bytes, all little-endian,
/// with file descriptors in SCM_RIGHTS ancillary data. Pure: decoding validates every length,
/// every descriptor count and every field, and reports an error instead of trapping.
/// protocol/vhost-user.md lists what Ferry speaks.

/// Request codes of the front-end (QEMU) to back-end (Ferry) channel.
public enum VhostRequest: UInt32, Sendable, CustomStringConvertible {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRARP = 19
    case netSetMTU = 20
    case setBackendReqFD = 21
    case iotlbMessage = 22
    case setVringEndian = 23
    case getConfig = 24
    case setConfig = 25
    case getInflightFD = 31
    case setInflightFD = 32
    case resetDevice = 34
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40

    public var description: String {
        switch self {
        case .getFeatures: return "GET_FEATURES"
        case .setFeatures: return "SET_FEATURES"
        case .setOwner: return "SET_OWNER"
        case .resetOwner: return "RESET_OWNER"
        case .setMemTable: return "SET_MEM_TABLE"
        case .setLogBase: return "SET_LOG_BASE"
        case .setLogFD: return "SET_LOG_FD"
        case .setVringNum: return "SET_VRING_NUM"
        case .setVringAddr: return "SET_VRING_ADDR"
        case .setVringBase: return "SET_VRING_BASE"
        case .getVringBase: return "GET_VRING_BASE"
        case .setVringKick: return "SET_VRING_KICK"
        case .setVringCall: return "SET_VRING_CALL"
        case .setVringErr: return "SET_VRING_ERR"
        case .getProtocolFeatures: return "GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: return "SET_PROTOCOL_FEATURES"
        case .getQueueNum: return "GET_QUEUE_NUM"
        case .setVringEnable: return "SET_VRING_ENABLE"
        case .sendRARP: return "SEND_RARP"
        case .netSetMTU: return "NET_SET_MTU"
        case .setBackendReqFD: return "SET_BACKEND_REQ_FD"
        case .iotlbMessage: return "IOTLB_MSG"
        case .setVringEndian: return "SET_VRING_ENDIAN"
        case .getConfig: return "GET_CONFIG"
        case .setConfig: return "SET_CONFIG"
        case .getInflightFD: return "GET_INFLIGHT_FD"
        case .setInflightFD: return "SET_INFLIGHT_FD"
        case .resetDevice: return "RESET_DEVICE"
        case .getMaxMemSlots: return "GET_MAX_MEM_SLOTS"
        case .addMemReg: return "ADD_MEM_REG"
        case .remMemReg: return "REM_MEM_REG"
        case .setStatus: return "SET_STATUS"
        case .getStatus: return "GET_STATUS"
        }
    }
}

/// The message header.
public struct VhostHeader: Sendable, Equatable {
    public static let size = 12
    /// Largest payload Ferry reads (the biggest it accepts is GET_CONFIG's 12 + 256 bytes; a
    /// memory table with 8 regions is 264). Anything larger ends the connection.
    public static let maxPayload = 4096
    /// Bits 0-1 of flags: the protocol version, always 1.
    public static let versionMask: UInt32 = 0x3
    public static let version: UInt32 = 0x1
    /// Set in every reply.
    public static let replyFlag: UInt32 = 0x4
    /// The front-end asks for a REPLY_ACK reply (when that protocol feature is negotiated).
    public static let needReplyFlag: UInt32 = 0x8

    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    public var needsReply: Bool { flags & VhostHeader.needReplyFlag != 0 }

    /// Decodes and checks a header: 12 bytes, version 1, not a reply, payload within limits.
    public static func decode(_ bytes: [UInt8]) throws(VhostError) -> VhostHeader {
        guard bytes.count == size else { throw .shortHeader(bytes.count) }
        let header = VhostHeader(request: le32(bytes, 0), flags: le32(bytes, 4), size: le32(bytes, 8))
        guard header.flags & versionMask == version else { throw .badVersion(flags: header.flags) }
        guard header.flags & replyFlag == 0 else { throw .unexpectedReply(request: header.request) }
        guard header.size <= UInt32(maxPayload) else { throw .oversized(request: header.request, size: header.size) }
        return header
    }

    /// The header bytes.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(VhostHeader.size)
        putLE(&out, request); putLE(&out, flags); putLE(&out, size)
        return out
    }
}

/// `{ u32 index; u32 num }`: SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE.
public struct VringState: Sendable, Equatable {
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
}

/// SET_VRING_ADDR: front-end (QEMU) virtual addresses of the three parts of a split ring.
public struct VringAddress: Sendable, Equatable {
    public var index: UInt32
    /// Bit 0: VHOST_VRING_F_LOG (dirty logging; Ferry does not advertise logging).
    public var flags: UInt32
    public var descriptorTable: UInt64
    public var usedRing: UInt64
    public var availableRing: UInt64
    public var log: UInt64
    public init(index: UInt32, flags: UInt32, descriptorTable: UInt64, usedRing: UInt64, availableRing: UInt64, log: UInt64) {
        self.index = index; self.flags = flags; self.descriptorTable = descriptorTable
        self.usedRing = usedRing; self.availableRing = availableRing; self.log = log
    }
}

/// SET_VRING_KICK/CALL/ERR: a queue index and an eventfd (nil: the "no fd" bit 8 was set).
public struct VringFile: Sendable, Equatable {
    public static let noFDFlag: UInt64 = 0x100
    public static let indexMask: UInt64 = 0xff
    public var index: UInt32
    public var fd: Int32?
    public init(index: UInt32, fd: Int32?) { self.index = index; self.fd = fd }
}

/// One region of SET_MEM_TABLE: `{ u64 guest_phys_addr; u64 memory_size; u64 userspace_addr;
/// u64 mmap_offset }`, with its descriptor.
public struct MemoryRegionMessage: Sendable, Equatable {
    public var region: MemoryRegion
    public var fd: Int32
}

/// GET_CONFIG: `{ u32 offset; u32 size; u32 flags; u8 payload[size] }`.
public struct ConfigSpace: Sendable, Equatable {
    public static let maxSize: UInt32 = 256
    public var offset: UInt32
    public var size: UInt32
    public var flags: UInt32
    public init(offset: UInt32, size: UInt32, flags: UInt32) { self.offset = offset; self.size = size; self.flags = flags }
}

/// A decoded front-end message. Descriptors it carries now belong to whoever holds it.
public enum VhostMessage: Sendable, Equatable {
    case getFeatures
    case setFeatures(UInt64)
    case setOwner
    case resetOwner
    case resetDevice
    case setMemTable([MemoryRegionMessage])
    case setVringNum(VringState)
    case setVringAddr(VringAddress)
    case setVringBase(VringState)
    case getVringBase(VringState)
    case setVringKick(VringFile)
    case setVringCall(VringFile)
    case setVringErr(VringFile)
    case getProtocolFeatures
    case setProtocolFeatures(UInt64)
    case getQueueNum
    case setVringEnable(VringState)
    case getConfig(ConfigSpace)
    case getMaxMemSlots
    /// ADD_MEM_REG: one region and the descriptors that came with it (exactly one is right; the
    /// connection refuses the message otherwise, so that a bad one fails only that message).
    case addMemReg(MemoryRegion, fds: [Int32])
    /// REM_MEM_REG: the region to remove (matched by guest address, size and front-end address;
    /// the mmap offset is ignored) and any descriptors that came with it (the spec lets older
    /// front-ends send the region's; QEMU 7.2 sends none; they are closed unused).
    case remMemReg(MemoryRegion, fds: [Int32])

    /// The descriptors the message holds.
    public var fds: [Int32] {
        switch self {
        case let .setMemTable(regions): return regions.map(\.fd)
        case let .addMemReg(_, fds), let .remMemReg(_, fds): return fds
        case let .setVringKick(f), let .setVringCall(f), let .setVringErr(f): return f.fd.map { [$0] } ?? []
        default: return []
        }
    }
}

/// Why a front-end message was refused. Every one ends the connection (the stream cannot be
/// trusted after it); none traps.
public enum VhostError: Error, Sendable, Equatable, CustomStringConvertible {
    case shortHeader(Int)
    case badVersion(flags: UInt32)
    case unexpectedReply(request: UInt32)
    case oversized(request: UInt32, size: UInt32)
    case truncatedPayload(expected: Int, received: Int)
    case unknownRequest(UInt32)
    case unsupportedRequest(VhostRequest)
    case payloadSize(VhostRequest, expected: String, received: Int)
    case unexpectedFDs(VhostRequest, count: Int)
    case missingFD(VhostRequest)
    case tooManyFDs(received: Int)
    case invalidField(VhostRequest, String)

    public var description: String {
        switch self {
        case let .shortHeader(n): return "header of \(n) bytes (needs \(VhostHeader.size))"
        case let .badVersion(flags): return "flags 0x\(String(flags, radix: 16)): not protocol version 1"
        case let .unexpectedReply(request): return "request \(request) is marked as a reply"
        case let .oversized(request, size): return "request \(request) announces a \(size)-byte payload (limit \(VhostHeader.maxPayload))"
        case let .truncatedPayload(expected, received): return "payload ended after \(received) of \(expected) bytes"
        case let .unknownRequest(code): return "unknown request type \(code)"
        case let .unsupportedRequest(request): return "\(request) is not supported (its feature was not offered)"
        case let .payloadSize(request, expected, received): return "\(request) payload is \(received) bytes, expected \(expected)"
        case let .unexpectedFDs(request, count): return "\(request) carries \(count) unexpected file descriptor(s)"
        case let .missingFD(request): return "\(request) lacks its file descriptor"
        case let .tooManyFDs(received): return "message carries more file descriptors than allowed (\(received)+)"
        case let .invalidField(request, what): return "\(request): \(what)"
        }
    }
}

public enum VhostDecoder {
    /// Regions of one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).
    public static let maxRegions = 8

    /// Decodes a message from its header, payload and descriptors. On error the caller still
    /// owns (and must close) `fds`; on success they are in the message.
    public static func decode(_ header: VhostHeader, payload: [UInt8], fds: [Int32]) throws(VhostError) -> VhostMessage {
        guard payload.count == Int(header.size) else {
            throw .truncatedPayload(expected: Int(header.size), received: payload.count)
        }
        guard let request = VhostRequest(rawValue: header.request) else { throw .unknownRequest(header.request) }
        func size(_ n: Int) throws(VhostError) {
            guard payload.count == n else { throw .payloadSize(request, expected: "\(n)", received: payload.count) }
        }
        func noFDs() throws(VhostError) {
            guard fds.isEmpty else { throw .unexpectedFDs(request, count: fds.count) }
        }
        func u64() throws(VhostError) -> UInt64 { try size(8); try noFDs(); return le64(payload, 0) }
        func state() throws(VhostError) -> VringState {
            try size(8); try noFDs()
            return VringState(index: le32(payload, 0), num: le32(payload, 4))
        }
        func file() throws(VhostError) -> VringFile {
            let value = try { () throws(VhostError) -> UInt64 in try size(8); return le64(payload, 0) }()
            let index = UInt32(value & VringFile.indexMask)
            let invalidBits = value & ~(VringFile.indexMask | VringFile.noFDFlag)
            guard invalidBits == 0 else { throw .invalidField(request, "unknown bits 0x\(String(invalidBits, radix: 16))") }
            if value & VringFile.noFDFlag != 0 {
                try noFDs()
                return VringFile(index: index, fd: nil)
            }
            guard fds.count >= 1 else { throw .missingFD(request) }
            guard fds.count == 1 else { throw .unexpectedFDs(request, count: fds.count - 1) }
            return VringFile(index: index, fd: fds[0])
        }
        func empty() throws(VhostError) {
            // QEMU sends some of these with a u64 payload of 0; accept 0 or 8 bytes.
            guard payload.isEmpty || payload.count == 8 else {
                throw .payloadSize(request, expected: "0 or 8", received: payload.count)
            }
            try noFDs()
        }
        switch request {
        case .getFeatures: try empty(); return .getFeatures
        case .setFeatures: return .setFeatures(try u64())
        case .setOwner: try empty(); return .setOwner
        case .resetOwner: try empty(); return .resetOwner
        case .resetDevice: try empty(); return .resetDevice
        case .getProtocolFeatures: try empty(); return .getProtocolFeatures
        case .setProtocolFeatures: return .setProtocolFeatures(try u64())
        case .getQueueNum: try empty(); return .getQueueNum
        case .setVringNum: return .setVringNum(try state())
        case .setVringBase: return .setVringBase(try state())
        case .getVringBase: return .getVringBase(try state())
        case .setVringEnable: return .setVringEnable(try state())
        case .setVringKick: return .setVringKick(try file())
        case .setVringCall: return .setVringCall(try file())
        case .setVringErr: return .setVringErr(try file())
        case .setVringAddr:
            try size(40); try noFDs()
            return .setVringAddr(VringAddress(index: le32(payload, 0), flags: le32(payload, 4),
                                              descriptorTable: le64(payload, 8), usedRing: le64(payload, 16),
                                              availableRing: le64(payload, 24), log: le64(payload, 32)))
        case .setMemTable:
            guard payload.count >= 8 else { throw .payloadSize(request, expected: "at least 8", received: payload.count) }
            let count = Int(le32(payload, 0))
            guard count >= 1, count <= maxRegions else { throw .invalidField(request, "\(count) regions (1-\(maxRegions))") }
            // QEMU sends the full 8-region array; at least `count` regions must be present.
            guard payload.count >= 8 + 32 * count, payload.count <= 8 + 32 * maxRegions else {
                throw .payloadSize(request, expected: "\(8 + 32 * count)...\(8 + 32 * maxRegions)", received: payload.count)
            }
            guard fds.count >= count else { throw .missingFD(request) }
            guard fds.count == count else { throw .unexpectedFDs(request, count: fds.count - count) }
            var regions: [MemoryRegionMessage] = []
            for i in 0..<count {
                let base = 8 + 32 * i
                let region = MemoryRegion(guestAddress: le64(payload, base), size: le64(payload, base + 8),
                                          userAddress: le64(payload, base + 16), mmapOffset: le64(payload, base + 24))
                if let why = region.invalidity { throw .invalidField(request, "region \(i) \(why)") }
                regions.append(MemoryRegionMessage(region: region, fd: fds[i]))
            }
            for i in regions.indices {
                for j in regions.indices where j > i {
                    if regions[i].region.overlapsGuest(regions[j].region) {
                        throw .invalidField(request, "regions \(i) and \(j) overlap in guest memory")
                    }
                }
            }
            return .setMemTable(regions)
        case .getConfig:
            guard payload.count >= 12 else { throw .payloadSize(request, expected: "at least 12", received: payload.count) }
            try noFDs()
            let config = ConfigSpace(offset: le32(payload, 0), size: le32(payload, 4), flags: le32(payload, 8))
            guard config.size <= ConfigSpace.maxSize, payload.count == 12 + Int(config.size) else {
                throw .payloadSize(request, expected: "12 + size (size <= \(ConfigSpace.maxSize))", received: payload.count)
            }
            return .getConfig(config)
        case .getMaxMemSlots: try empty(); return .getMaxMemSlots
        case .addMemReg, .remMemReg:
            // `{ u64 padding; { u64 guest_phys_addr, memory_size, userspace_addr, mmap_offset } }`.
            try size(40)
            let region = MemoryRegion(guestAddress: le64(payload, 8), size: le64(payload, 16),
                                      userAddress: le64(payload, 24), mmapOffset: le64(payload, 32))
            return request == .addMemReg ? .addMemReg(region, fds: fds) : .remMemReg(region, fds: fds)
        default:
            throw .unsupportedRequest(request)
        }
    }

    /// A reply: the request's code, flags version 1 | REPLY, and `payload`.
    public static func reply(to request: UInt32, payload: [UInt8]) -> [UInt8] {
        VhostHeader(request: request, flags: VhostHeader.version | VhostHeader.replyFlag,
                    size: UInt32(payload.count)).encoded + payload
    }

    /// A u64 payload.
    public static func u64Payload(_ value: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        putLE(&out, value)
        return out
    }

    /// A vring state payload.
    public static func statePayload(_ state: VringState) -> [UInt8] {
        var out: [UInt8] = []
        putLE(&out, state.index); putLE(&out, state.num)
        return out
    }
}

@inline(__always) func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
}

@inline(__always) func le64(_ b: [UInt8], _ at: Int) -> UInt64 {
    UInt64(le32(b, at)) | UInt64(le32(b, at + 4)) << 32
}

@inline(__always) func putLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
    withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
}
