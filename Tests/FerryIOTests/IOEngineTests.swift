import FerryIO
import Foundation
import FerrySystem
import Glibc
import XCTest

/// Both I/O engines run the same operations on real files and must give the same results:
/// the sync engine (plain syscalls) is the reference the io_uring engine is held to.
final class IOEngineTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/ferry-io-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw XCTSkip("mkdtemp failed") }
        directory = String(cString: made)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// io_uring engines whose lone operations `run` waits for without a flush first: the engine
    /// then runs such an operation on the waiting thread itself (`UringIOEngine`, held back),
    /// which must give the ring's results too.
    private var waitedWithoutFlush: Set<ObjectIdentifier> = []

    /// The reference engine, an io_uring engine used through its ring, and one whose lone
    /// operations run on the waiting thread.
    func engines(depth: Int) throws -> [IOEngine] {
        let waitsAlone = try UringIOEngine(depth: depth)
        waitedWithoutFlush.insert(ObjectIdentifier(waitsAlone))
        return [SyncIOEngine(depth: depth), try UringIOEngine(depth: depth), waitsAlone]
    }

    /// The engine's kind, and "-alone" for one in `waitedWithoutFlush` (file names, messages).
    func label(_ engine: IOEngine) -> String {
        "\(engine.kind)" + (waitedWithoutFlush.contains(ObjectIdentifier(engine)) ? "-alone" : "")
    }

    func open(_ name: String, _ flags: Int32 = O_RDWR | O_CREAT) throws -> Int32 {
        let fd = Glibc.open("\(directory)/\(name)", flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw XCTSkip("open \(name) with flags \(flags): errno \(errno)") }
        return fd
    }

    /// Submits `operation`, flushes (except for the engines in `waitedWithoutFlush`) and waits
    /// for its completion; returns the result.
    func run(_ engine: IOEngine, _ operation: IOOperation, slot: Int = 0) -> Int32 {
        engine.submit(operation, slot: slot)
        if !waitedWithoutFlush.contains(ObjectIdentifier(engine)) { engine.flush() }
        var result: Int32?
        while result == nil {
            engine.reap(wait: true) { completion in
                XCTAssertEqual(completion.slot, slot)
                result = completion.result
            }
        }
        XCTAssertEqual(engine.inFlight, 0)
        return result!
    }

    func testReadsAndWritesGiveTheHostsBytesAndCounts() throws {
        for engine in try engines(depth: 4) {
            let fd = try open("rw-\(label(engine))")
            defer { close(fd) }
            let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            // Through the ring (as for an O_DIRECT descriptor) and at submission (page cache).
            let written = data.withUnsafeBytes { run(engine, .write(fd: fd, offset: 100, data: $0, cached: false)) }
            XCTAssertEqual(written, 10_000, "\(label(engine))")
            let rewritten = data.withUnsafeBytes { run(engine, .write(fd: fd, offset: 100, data: $0, cached: true)) }
            XCTAssertEqual(rewritten, 10_000, "\(label(engine))")
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 20_000, alignment: 4096)
            defer { buffer.deallocate() }
            // A read past the end returns what there is, as pread does.
            XCTAssertEqual(run(engine, .read(fd: fd, offset: 100, buffer: buffer)), 10_000, "\(label(engine))")
            XCTAssertEqual(Array(buffer.prefix(10_000)), data, "\(label(engine))")
            XCTAssertEqual(run(engine, .read(fd: fd, offset: 50_000, buffer: buffer)), 0, "\(label(engine))")
            XCTAssertEqual(run(engine, .fsync(fd: fd, dataOnly: false)), 0)
            XCTAssertEqual(run(engine, .fsync(fd: fd, dataOnly: true)), 0)
        }
    }

    func testErrorsAreTheSyscallsErrors() throws {
        for engine in try engines(depth: 2) {
            let readOnly = try open("ro-\(label(engine))")
            close(readOnly)
            let fd = try open("ro-\(label(engine))", O_RDONLY)
            defer { close(fd) }
            let byte: [UInt8] = [1]
            for cached in [false, true] {
                XCTAssertEqual(byte.withUnsafeBytes { run(engine, .write(fd: fd, offset: 0, data: $0, cached: cached)) },
                               -EBADF, "\(label(engine)) cached=\(cached)")
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
            defer { buffer.deallocate() }
            XCTAssertEqual(run(engine, .read(fd: 9_999, offset: 0, buffer: buffer)), -EBADF, "\(label(engine))")
            XCTAssertEqual(run(engine, .fallocate(fd: fd, mode: 0, offset: 0, length: 4096)), -EBADF, "\(label(engine))")
        }
    }

    func testODirectRefusesWhatTheHostRefuses() throws {
        for engine in try engines(depth: 2) {
            let plain = try open("direct-\(label(engine))")
            let block = [UInt8](repeating: 0x5a, count: 8192)
            _ = block.withUnsafeBytes { pwrite(plain, $0.baseAddress, 8192, 0) }
            close(plain)
            let fd = Glibc.open("\(directory)/direct-\(label(engine))", O_RDWR | HostFlags.oDirect | O_CLOEXEC)
            guard fd >= 0 else { throw XCTSkip("the file system under /tmp refuses O_DIRECT") }
            defer { close(fd) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192 + 1, alignment: 4096)
            defer { buffer.deallocate() }
            let aligned = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<4096])
            let misaligned = UnsafeMutableRawBufferPointer(rebasing: buffer[1..<4097])
            let reference = SyncIOEngine(depth: 1)
            XCTAssertEqual(run(engine, .read(fd: fd, offset: 4096, buffer: aligned)), 4096, "\(label(engine))")
            XCTAssertEqual(run(engine, .read(fd: fd, offset: 1, buffer: aligned)),
                           run(reference, .read(fd: fd, offset: 1, buffer: aligned)), "\(label(engine)): unaligned offset")
            XCTAssertEqual(run(engine, .read(fd: fd, offset: 0, buffer: misaligned)),
                           run(reference, .read(fd: fd, offset: 0, buffer: misaligned)), "\(label(engine)): unaligned memory")
        }
    }

    func testFallocatePunchesHolesLikeTheSyscall() throws {
        for engine in try engines(depth: 1) {
            let fd = try open("fallocate-\(label(engine))")
            defer { close(fd) }
            XCTAssertEqual(run(engine, .fallocate(fd: fd, mode: 0, offset: 0, length: 65536)), 0)
            var st = stat()
            fstat(fd, &st)
            XCTAssertEqual(st.st_size, 65536, "\(label(engine))")
            let punch: Int32 = 0x02 | 0x01   // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            XCTAssertEqual(run(engine, .fallocate(fd: fd, mode: punch, offset: 0, length: 4096)), 0, "\(label(engine))")
            let invalid = IOOperation.fallocate(fd: fd, mode: 0x7777, offset: 0, length: 1)
            let refused = run(engine, invalid)
            XCTAssertLessThan(refused, 0, "\(label(engine)): an unknown mode is refused")
            XCTAssertEqual(refused, run(SyncIOEngine(depth: 1), invalid), "\(label(engine))")
        }
    }

    /// Many operations in flight at once, completed in any order, each with its own result:
    /// a random mix on one engine leaves the file as the same mix on the reference does.
    func testAFullQueueOfMixedOperationsMatchesTheReference() throws {
        let depth = 16
        var contents: [[UInt8]] = []
        for engine in try engines(depth: depth) {
            let fd = try open("mixed-\(label(engine))")
            defer { close(fd) }
            var generator = SplitMix(seed: 42)
            let blocks = (0..<depth).map { i in [UInt8](repeating: UInt8(i + 1), count: 4096 + i * 512) }
            let readBuffers = (0..<depth).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096) }
            defer { readBuffers.forEach { $0.deallocate() } }
            for round in 0..<50 {
                // Disjoint ranges per slot, so the outcome does not depend on completion order.
                for slot in 0..<depth {
                    let offset = Int64(slot) * 16_384 + Int64(generator.next() % 4096)
                    if round % 2 == 0 {
                        blocks[slot].withUnsafeBytes {
                            engine.submit(.write(fd: fd, offset: offset, data: $0, cached: slot % 2 == 0), slot: slot)
                        }
                    } else {
                        engine.submit(.read(fd: fd, offset: offset, buffer: readBuffers[slot]), slot: slot)
                    }
                }
                XCTAssertEqual(engine.inFlight, depth)
                engine.flush()
                var seen = Set<Int>()
                while seen.count < depth {
                    engine.reap(wait: true) { completion in
                        XCTAssertTrue(seen.insert(completion.slot).inserted)
                        if round % 2 == 0 { XCTAssertEqual(Int(completion.result), blocks[completion.slot].count) }
                        else { XCTAssertGreaterThan(completion.result, 0) }
                    }
                }
            }
            var st = stat()
            fstat(fd, &st)
            var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
            _ = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            contents.append(bytes)
        }
        for other in contents.dropFirst() { XCTAssertEqual(contents[0], other) }
    }

    /// A thread about to sleep (`prepareToSleep`) hears of the next completion through the
    /// eventfd; a busy thread's completions (reaped before it sleeps) cost no signal.
    func testCompletionsSignalTheEventFDOnlyBeforeSleep() throws {
        let engine = try UringIOEngine(depth: 2)
        guard let eventFD = engine.completionFD else { return XCTFail("the io_uring engine has no completion descriptor") }
        var ends: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&ends), 0)
        defer { close(ends[0]); close(ends[1]) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
        defer { buffer.deallocate() }
        XCTAssertTrue(engine.prepareToSleep(), "nothing in flight: nothing to reap")

        // Before sleep: a read of an empty pipe is in flight, the eventfd stays quiet until the
        // pipe gets data, then signals.
        engine.submit(.read(fd: ends[0], offset: 0, buffer: buffer), slot: 0)
        XCTAssertTrue(engine.prepareToSleep(), "the pipe is empty: the read cannot have completed")
        XCTAssertEqual(Host.waitReadable([eventFD], timeoutMilliseconds: 0), [false])
        XCTAssertEqual(write(ends[1], "a", 1), 1)
        XCTAssertEqual(Host.waitReadable([eventFD], timeoutMilliseconds: 5_000), [true])
        XCTAssertFalse(engine.prepareToSleep(), "a completion is waiting")
        XCTAssertEqual(engine.reap(wait: false) { XCTAssertEqual($0.slot, 0); XCTAssertEqual($0.result, 1) }, 1)
        EventCounter.drain(eventFD)

        // Busy: the completion is reaped without the thread having slept; no signal.
        engine.submit(.read(fd: ends[0], offset: 0, buffer: buffer), slot: 1)
        engine.flush()
        XCTAssertEqual(write(ends[1], "b", 1), 1)
        XCTAssertEqual(engine.reap(wait: true) { XCTAssertEqual($0.slot, 1); XCTAssertEqual($0.result, 1) }, 1)
        XCTAssertEqual(Host.waitReadable([eventFD], timeoutMilliseconds: 0), [false])
    }

    /// `sleep(untilCompletionOrSignal:)` ends on a signalled eventfd (returned, drained) or on a
    /// completion (left for `reap`), in both engines; with io_uring the eventfd's poll rides the
    /// ring and is armed again by the next sleep.
    func testSleepEndsOnAnEventOrACompletion() throws {
        for engine in try engines(depth: 2) {
            let kick = try EventCounter(), other = try EventCounter()
            let events = [kick.fd.rawValue, other.fd.rawValue]
            var ends: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&ends), 0)
            defer { close(ends[0]); close(ends[1]) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
            defer { buffer.deallocate() }

            // An event with nothing in flight (twice: the poll is armed again).
            for _ in 0..<2 {
                kick.signal()
                XCTAssertEqual(engine.sleep(untilCompletionOrSignal: events), [kick.fd.rawValue], "\(label(engine))")
                XCTAssertEqual(Host.waitReadable([kick.fd.rawValue], timeoutMilliseconds: 0), [false], "drained")
            }
            if engine.kind == .uring {
                // An event signalled by another thread while a read waits in flight.
                engine.submit(.read(fd: ends[0], offset: 0, buffer: buffer), slot: 0)
                let signaller = Thread { usleep(50_000); other.signal() }
                signaller.start()
                XCTAssertEqual(engine.sleep(untilCompletionOrSignal: events), [other.fd.rawValue])
                // Then the read completes: the sleep ends with no event, the reap delivers it.
                XCTAssertEqual(write(ends[1], "a", 1), 1)
                var slept = engine.sleep(untilCompletionOrSignal: events)
                while slept.isEmpty && engine.reap(wait: false, { XCTAssertEqual($0.result, 1) }) == 0 {
                    slept = engine.sleep(untilCompletionOrSignal: events)
                }
                XCTAssertEqual(slept, [])
                XCTAssertEqual(engine.inFlight, 0)
            } else {
                // The sync engine reads at submission (a blocking pipe: give it its byte first);
                // the completion is ready, so the sleep returns at once.
                XCTAssertEqual(write(ends[1], "a", 1), 1)
                engine.submit(.read(fd: ends[0], offset: 0, buffer: buffer), slot: 0)
                XCTAssertEqual(engine.sleep(untilCompletionOrSignal: events), [], "a completion is ready")
                XCTAssertEqual(engine.reap(wait: false) { _ in }, 1)
            }
        }
    }
}

/// A small deterministic random generator for repeatable workloads.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

