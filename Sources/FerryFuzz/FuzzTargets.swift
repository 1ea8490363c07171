import FerryEngine
import FerryFS
import FerryProtocol
import FerrySystem
import FerryVhost
import Glibc
import Logging

/// The inputs a client or the host controls, each as one function of bytes that must never
/// crash, hang or touch memory it should not: the targets of `ferry-fuzz` (libFuzzer, with
/// address sanitizer) and of the corpus replay in the tests. One target per parser of
/// untrusted input.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A sequence of FUSE requests (each framed by its own header length) decoded and run by
    /// the engine on a scratch directory, as a guest or a container would send them.
    case fuseRequests = "fuse-requests"
    /// A buffer read from a fanotify descriptor (the host side, but parsed by Ferry).
    case fanotifyEvents = "fanotify-events"
    /// A buffer read from an inotify descriptor.
    case inotifyEvents = "inotify-events"
    /// A vhost-user message (header and payload) from the front-end socket.
    case vhostMessage = "vhost-message"
    /// A split virtqueue in guest memory written by the guest: descriptor table and rings
    /// walked, readable bytes gathered, replies written.
    case virtqueue = "virtqueue"

    /// The scratch directory the FUSE target serves (created at its first input).
    public static var fuseScratchDirectory: String { FuseRequestTarget.shared.source }

    /// For a fuzzing process only (process-wide limits, inherited by children): files stop
    /// growing at 64 MiB (EFBIG, SIGXFSZ ignored), so no input can fill the disk, and the
    /// descriptor limit is raised as `ferry serve` raises it (the FUSE target's open files are
    /// bounded by it, as a server's are).
    public static func prepareFuzzingProcess() {
        var limit = rlimit(rlim_cur: 64 << 20, rlim_max: 64 << 20)
        _ = setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit)
        signal(SIGXFSZ, SIG_IGN)
        DescriptorLimit.raise()
    }

    /// Runs one input.
    public func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .fuseRequests: FuseRequestTarget.shared.run(bytes)
        case .fanotifyEvents:
            var skipped = 0
            _ = FanotifyEvent.parse(bytes, skipping: 0, skipped: &skipped)
        case .inotifyEvents: _ = InotifyEvent.parse(bytes)
        case .vhostMessage: VhostMessageTarget.run(bytes)
        case .virtqueue: VirtqueueTarget.run(bytes)
        }
    }
}

/// Splits `bytes` into (header-length-framed) messages: each takes the length in its first
/// four bytes (little-endian), clamped to what is left, at least `minimum`.
func framedMessages(_ bytes: UnsafeRawBufferPointer, minimum: Int) -> [UnsafeRawBufferPointer] {
    var messages: [UnsafeRawBufferPointer] = []
    var offset = 0
    while bytes.count - offset >= minimum, messages.count < 64 {
        var declared = 0
        for i in 0..<4 { declared |= Int(bytes[offset + i]) << (8 * i) }
        let length = min(max(declared, minimum), bytes.count - offset)
        messages.append(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length]))
        offset += length
    }
    return messages
}

/// One engine over a scratch directory for the whole fuzzing run (a long-lived server sees
/// one request after another). Under the fuzzer, files cannot grow beyond 64 MiB
/// (`FuzzTarget.prepareFuzzingProcess`), so inputs cannot fill the disk; open files and inodes
/// have a server's default bounds for the descriptor limit, so inputs that never release what
/// they open meet ENFILE, as a guest would, instead of exhausting the process's descriptors.
///
/// Node ids and file handles are numbers the server chose (handles are descriptor numbers,
/// node ids hashes), which an input cannot guess; so small numbers in an input name what the
/// server handed out before: node id k (2...15) is the k-th node an entry reply returned, and
/// a handle k (0...15) the k-th handle an open reply returned. Larger numbers pass unchanged.
final class FuseRequestTarget: @unchecked Sendable {
    static let shared = FuseRequestTarget()

    let source: String
    let engine: FUSEEngine
    let worker: Worker
    private var nodes: [UInt64] = []
    private var handles: [UInt64] = []

    private init() {
        var template = Array("/var/tmp/ferry-fuzz.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { fatalError("mkdtemp: \(Errno.current)") }
        source = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        do {
            var options = FSOptions()
            options.limits = .defaults(descriptorLimit: DescriptorLimit.current, inodesUseDescriptors: false)
            let fs = try PassthroughFS(source: source, options: options, logger: logger)
            engine = FUSEEngine(fs: fs, options: EngineOptions(), logger: logger)
        } catch {
            fatalError("cannot serve \(source): \(error)")
        }
        worker = engine.makeWorker()
        // INIT first, as the kernel sends it: the engine refuses everything before it.
        var initRequest: [UInt8] = []
        func u32(_ v: UInt32) { initRequest += withUnsafeBytes(of: v.littleEndian, Array.init) }
        func u64(_ v: UInt64) { initRequest += withUnsafeBytes(of: v.littleEndian, Array.init) }
        u32(40 + 16); u32(Opcode.`init`.rawValue); u64(1); u64(0); u32(0); u32(0); u32(0); u32(0)
        u32(7); u32(45); u32(65536); u32(0)
        initRequest.withUnsafeBytes { run(request: $0) }
    }

    func run(_ bytes: UnsafeRawBufferPointer) {
        for message in framedMessages(bytes, minimum: FUSEABI.inHeaderSize) {
            // A blocking lock request parks a waiter thread until the lock is free: inputs
            // could pile up thousands of them, so it is left to the lock tests.
            if message.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == Opcode.setlkw.rawValue { continue }
            run(request: message)
        }
    }

    /// Opcodes whose body starts with a file handle.
    private static let handleFirst: Set<UInt32> = [
        Opcode.read, .write, .release, .flush, .fsync, .readdir, .readdirplus, .releasedir, .fsyncdir,
        .getlk, .setlk, .fallocate, .lseek, .copyFileRange, .ioctl, .poll,
    ].reduce(into: []) { $0.insert($1.rawValue) }

    /// Runs one request the way a transport does: in the worker's request buffer, its data
    /// operation (if any) completed and answered before the next.
    private func run(request: UnsafeRawBufferPointer) {
        let buffer = worker.requestBuffer
        let count = min(request.count, buffer.capacity)
        let bytes = buffer.mutableBytes
        bytes.baseAddress!.copyMemory(from: request.baseAddress!, byteCount: count)
        let opcode = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        substitute(in: bytes, at: 16, from: nodes, range: 2..<16, offset: 2)
        if FuseRequestTarget.handleFirst.contains(opcode), count >= 48 {
            substitute(in: bytes, at: 40, from: handles, range: 0..<16, offset: 0)
        }
        if case let .reply(reply) = engine.handle(buffer.view(count: count), worker: worker),
           reply.load(Int32.self, at: 4) == 0 {
            remember(reply, opcode: opcode)
        }
        engine.drainData(worker) { _ in true }
        // The request ran with its caller's ids; libFuzzer, on this thread, writes its corpus
        // as root.
        worker.credentials.becomeRoot()
    }

    private func substitute(in bytes: UnsafeMutableRawBufferPointer, at offset: Int, from known: [UInt64],
                            range: Range<UInt64>, offset first: UInt64) {
        let value = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        guard range.contains(value), !known.isEmpty else { return }
        bytes.storeBytes(of: known[Int(value - first) % known.count], toByteOffset: offset, as: UInt64.self)
    }

    private func remember(_ reply: ByteView, opcode: UInt32) {
        let body = 16
        switch Opcode(rawValue: opcode) {
        case .lookup?, .mkdir?, .mknod?, .symlink?, .link?:
            if let node = reply.load(UInt64.self, at: body) { keep(node, in: &nodes) }
        case .create?, .tmpfile?:
            if let node = reply.load(UInt64.self, at: body) { keep(node, in: &nodes) }
            if let fh = reply.load(UInt64.self, at: body + FUSEABI.entryOutSize) { keep(fh, in: &handles) }
        case .open?, .opendir?:
            if let fh = reply.load(UInt64.self, at: body) { keep(fh, in: &handles) }
        default: break
        }
    }

    private func keep(_ value: UInt64, in list: inout [UInt64]) {
        list.append(value)
        if list.count > 14 { list.removeFirst() }
    }
}

/// The vhost-user header and the message decoded from the rest (descriptors never come with
/// fuzzed input).
enum VhostMessageTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        let all = Array(bytes)
        guard all.count >= VhostHeader.size, let header = try? VhostHeader.decode(Array(all[0..<VhostHeader.size])) else { return }
        let message = try? VhostDecoder.decode(header, payload: Array(all[VhostHeader.size...].prefix(Int(header.size))), fds: [])
        // ADD/REM_MEM_REG: the region checks the connection makes before mapping one.
        if case let .addMemReg(region, _) = message { _ = region.invalidity }
        if case let .remMemReg(region, _) = message { _ = region.invalidity }
    }
}

/// A queue of 16 entries in 64 KiB of fake guest memory whose every byte comes from the input:
/// chains are taken until the queue is empty or broken, their readable bytes gathered and a
/// reply written into their writable buffers.
enum VirtqueueTarget {
    static let guestBase: UInt64 = 0x10000, userBase: UInt64 = 0x7f00_0000_0000, bytes = 1 << 16, size = 16

    static func run(_ input: UnsafeRawBufferPointer) {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        if let source = input.baseAddress { memory.copyMemory(from: source, byteCount: min(input.count, bytes)) }
        let guest = GuestMemory(regions: [.init(region: MemoryRegion(guestAddress: guestBase, size: UInt64(bytes),
                                                                     userAddress: userBase, mmapOffset: 0), host: memory)]) {
            memory.deallocate()
        }
        // Descriptor table at the start, available ring at 0x100, used ring at 0x200.
        let address = VringAddress(index: 1, flags: 0, descriptorTable: userBase, usedRing: userBase + 0x200,
                                   availableRing: userBase + 0x100, log: 0)
        let eventIndex = input.count > 0x3ff && input[0x3ff] & 1 == 1
        guard let queue = try? SplitQueue(memory: guest, size: size, address: address, base: 0,
                                          eventIndex: eventIndex, indirect: true) else { return }
        var scratch = [UInt8](repeating: 0, count: 4096)
        let reply = [UInt8](repeating: 0x5a, count: 256)
        for _ in 0..<(2 * size) {
            guard let chain = try? queue.pop() else { return }
            _ = scratch.withUnsafeMutableBytes { chain.copyReadable(into: $0) }
            _ = reply.withUnsafeBytes { chain.writeReply(UnsafeRawBufferPointer(rebasing: $0.prefix(min(256, chain.writableLength)))) }
            queue.push(head: chain.head, length: 0)
            _ = queue.needsSignal()
        }
    }
}
