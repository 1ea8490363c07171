import FerryProtocol
import FerrySystem
import Glibc
import Synchronization
import XCTest
@testable import FerryTransport

/// `InterruptibleRead`, the blocking read(2) of a /dev/fuse reader, on a pipe: an interrupt
/// ends a read under way, and one that comes between reads is kept for the next read, so a
/// lock settle's kick is not lost while the reader handles a request.
final class InterruptibleReadTests: XCTestCase {
    private var pipeFDs: [Int32] = [-1, -1]

    override func setUp() {
        XCTAssertEqual(pipe(&pipeFDs), 0)
        WakeSignal.install(WakeSignal.reader)
    }

    override func tearDown() {
        pipeFDs.forEach { close($0) }
    }

    private func writeByte() { var byte: UInt8 = 1; XCTAssertEqual(write(pipeFDs[1], &byte, 1), 1) }

    private func isRetry(_ result: DevFuseDevice.ReadResult) -> Bool {
        if case .retry = result { return true }
        return false
    }

    func testAnInterruptBetweenReadsEndsTheNextReadAtOnce() throws {
        let reader = InterruptibleRead()
        let buffer = MessageBuffer(capacity: 4096)
        // Were the interrupt lost, the read of the empty pipe would block: a byte after 3 s ends
        // it with a request instead.
        let done = Atomic<Bool>(false)
        let writeEnd = pipeFDs[1]
        let watchdog = try HostThread.spawn(name: "test-watchdog") {
            for _ in 0..<300 where !done.load(ordering: .acquiring) { usleep(10_000) }
            if !done.load(ordering: .acquiring) { var byte: UInt8 = 1; _ = write(writeEnd, &byte, 1) }
        }
        defer { watchdog.join() }
        reader.interrupt()
        let first = reader.read(pipeFDs[0], into: buffer)
        done.store(true, ordering: .releasing)
        XCTAssertTrue(isRetry(first), "the interrupt before the read was lost")
        writeByte()
        guard case .request(1) = reader.read(pipeFDs[0], into: buffer) else {
            return XCTFail("the kept interrupt was not used up by the first read")
        }
    }

    func testAnInterruptEndsAReadUnderWay() throws {
        let result = Mutex<String>("")
        let started = Atomic<Bool>(false)
        let readerBox = Mutex<InterruptibleRead?>(nil)
        let fd = pipeFDs[0]
        let thread = try HostThread.spawn(name: "test-reader") {
            let reader = InterruptibleRead()
            readerBox.withLock { $0 = reader }
            started.store(true, ordering: .releasing)
            let buffer = MessageBuffer(capacity: 4096)
            let outcome = reader.read(fd, into: buffer)
            result.withLock { $0 = if case .request = outcome { "request" } else if case .retry = outcome { "retry" } else { "closed" } }
        }
        while !started.load(ordering: .acquiring) { usleep(1_000) }
        usleep(100_000)   // well inside read(2) by now
        readerBox.withLock { $0 }?.interrupt()
        // If the interrupt did not end the read, this byte does, after 5 s, and the read says "request".
        for _ in 0..<500 where result.withLock({ $0 }).isEmpty { usleep(10_000) }
        if result.withLock({ $0 }).isEmpty { writeByte() }
        thread.join()
        XCTAssertEqual(result.withLock { $0 }, "retry")
    }
}
