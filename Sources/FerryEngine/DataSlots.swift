import FerryFS
import FerryIO
import FerryProtocol

/// The data requests (READ, WRITE, FSYNC, FSYNCDIR, FALLOCATE) of one reader thread that its I/O
/// engine is running, one slot each.
///
/// A slot owns the buffer its request was read into (a WRITE's data stays there until the host
/// has it) and, for a READ, the buffer its reply is built in (the host reads straight into the
/// reply's payload, page-aligned for O_DIRECT files). The reader always reads the next request
/// into the buffer of a free slot (`requestBuffer`); when a request goes to the I/O engine, its
/// slot is taken and another becomes the free one. Owned by one thread; nothing is allocated
/// per request once every slot has been used once.
final class DataSlots {
    /// One request in flight.
    final class Slot {
        let index: Int
        /// The request as the transport read it.
        let request: MessageBuffer
        private let replyCapacity: Int
        /// Where a READ's reply is built: the data starts on a page boundary.
        private(set) lazy var reply = MessageBuffer(capacity: replyCapacity, alignedAt: FUSEABI.readPayloadOffset)
        /// The request's unique id (for the reply) and opcode (for the log).
        var unique: UInt64 = 0
        var opcode: Opcode = .read
        /// The open file the operation runs on, kept until it completes.
        var file: OpenFileTable.OpenFile?
        /// Where the data of a READ or WRITE lives when the transport keeps it out of the
        /// request and reply buffers (vhost-user: guest memory); used when `vectorPayload`.
        let vectors = IOVectorList()
        /// The transport filled `vectors` for this request (`FUSEEngine.handle(payloadInVectors:)`).
        var vectorPayload = false
        /// A READ for `vectors` ran into the reply buffer instead (an O_DIRECT host file and
        /// buffers it cannot take); its completion copies the bytes over.
        var bounced = false

        init(index: Int, requestCapacity: Int, replyCapacity: Int) {
            self.index = index
            self.request = MessageBuffer(capacity: requestCapacity, alignedAt: FUSEABI.writePayloadOffset)
            self.replyCapacity = replyCapacity
        }
    }

    /// The engine that runs the operations.
    let io: IOEngine
    private let slots: [Slot]
    /// Free slots, the most recently freed last (its buffers are the warmest).
    private var free: [Int]

    init(io: IOEngine, requestCapacity: Int, replyCapacity: Int) {
        self.io = io
        slots = (0..<io.depth).map { Slot(index: $0, requestCapacity: requestCapacity, replyCapacity: replyCapacity) }
        free = Array(slots.indices.reversed())
    }

    /// Whether a request can be read now (some slot is free).
    var hasFreeSlot: Bool { !free.isEmpty }
    /// Requests in flight.
    var inFlight: Int { slots.count - free.count }

    /// The free slot the next request is read into (only while `hasFreeSlot`).
    var current: Slot { slots[free[free.count - 1]] }

    /// Marks the current slot as in flight (its request went to the I/O engine).
    func take() -> Slot {
        slots[free.removeLast()]
    }

    /// The slot of a completion, freed again.
    func release(_ index: Int) -> Slot {
        let slot = slots[index]
        free.append(index)
        return slot
    }
}
