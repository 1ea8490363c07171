import Foundation
import XCTest
@testable import FerryNotify

/// The change ring: concurrent producers, wrap-around, overflow, and no lost or duplicated element.
final class ChangeRingTests: XCTestCase {
    /// A test element: which producer pushed it and its sequence number there.
    struct Tagged: BitwiseCopyable, Equatable {
        var producer: UInt32
        var sequence: UInt32
    }

    func testCapacityIsAPowerOfTwo() {
        XCTAssertEqual(ChangeRing<UInt64>(capacity: 8).capacity, 8)
        XCTAssertEqual(ChangeRing<UInt64>(capacity: 9).capacity, 16)
        XCTAssertEqual(ChangeRing<UInt64>(capacity: 1).capacity, 2)
    }

    func testFirstInFirstOutAcrossManyWrapArounds() {
        let ring = ChangeRing<UInt64>(capacity: 8)
        var next: UInt64 = 0, expected: UInt64 = 0
        for round in 0..<1_000 {
            let burst = round % 8 + 1                    // 1...8 elements, so the ring wraps often
            for _ in 0..<burst { XCTAssertTrue(ring.push(next)); next += 1 }
            XCTAssertEqual(ring.occupancy, burst)
            while let value = ring.pop() { XCTAssertEqual(value, expected); expected += 1 }
        }
        XCTAssertEqual(expected, next)
        XCTAssertNil(ring.pop())
        XCTAssertFalse(ring.takeOverflow())
        XCTAssertEqual(ring.highWaterMark, 8)
    }

    func testFullRingRefusesAndRaisesTheOverflowFlagOnce() {
        let ring = ChangeRing<UInt64>(capacity: 4)
        for i in 0..<4 { XCTAssertTrue(ring.push(UInt64(i))) }
        XCTAssertFalse(ring.push(99))
        XCTAssertFalse(ring.push(100))
        XCTAssertTrue(ring.takeOverflow())
        XCTAssertFalse(ring.takeOverflow(), "taking the flag clears it")
        // What was accepted is intact and in order; the refused elements never appear.
        XCTAssertEqual((0..<4).compactMap { _ in ring.pop() }, [0, 1, 2, 3])
        XCTAssertNil(ring.pop())
        XCTAssertTrue(ring.push(5))
        XCTAssertEqual(ring.pop(), 5)
    }

    /// Four producers race one consumer through a small ring: every accepted element arrives
    /// exactly once, each producer's elements in order, and a refused push is always reported
    /// through the overflow flag.
    func testConcurrentProducersLoseAndDuplicateNothing() {
        let ring = ChangeRing<Tagged>(capacity: 64)
        let producers = 4, perProducer = 200_000
        let accepted = (0..<producers).map { _ in AcceptedLog() }
        let group = DispatchGroup()
        for p in 0..<producers {
            group.enter()
            Thread.detachNewThread {
                for s in 0..<perProducer {
                    if ring.push(Tagged(producer: UInt32(p), sequence: UInt32(s))) { accepted[p].add(UInt32(s)) }
                }
                group.leave()
            }
        }
        var received = [[UInt32]](repeating: [], count: producers)
        var sawOverflow = false
        var producersDone = false
        while true {
            if let element = ring.pop() {
                received[Int(element.producer)].append(element.sequence)
                continue
            }
            if ring.takeOverflow() { sawOverflow = true }
            if producersDone { break }
            producersDone = group.wait(timeout: .now()) == .success
        }
        while let element = ring.pop() { received[Int(element.producer)].append(element.sequence) }
        var refused = 0
        for p in 0..<producers {
            XCTAssertEqual(received[p], accepted[p].values, "producer \(p): exactly the accepted elements, in order")
            refused += perProducer - accepted[p].values.count
        }
        if refused > 0 { XCTAssertTrue(sawOverflow || ring.takeOverflow(), "\(refused) refused pushes raised the flag") }
        XCTAssertLessThanOrEqual(ring.highWaterMark, 64)
    }

    /// protocol/notify-ring.md gives the slot size; the ring's memory is capacity x stride.
    func testRecordLayoutMatchesTheContract() {
        XCTAssertEqual(MemoryLayout<ChangeRecord>.stride, 280)
        XCTAssertEqual(ChangeRecord.maxNameLength, 255)
    }

    func testRecordKeepsItsNameInline() {
        let name = Array("a-name-of-some-length.txt".utf8)
        let record = ChangeRecord(kind: .removed, parent: 7, name: name, node: 9)
        XCTAssertEqual(record.name, name)
        XCTAssertEqual(record.parent, 7)
        XCTAssertTrue(record.isEntryChange)
        let long = ChangeRecord(kind: .entry, parent: 1, name: [UInt8](repeating: 0x61, count: 300), node: 0)
        XCTAssertEqual(long.name.count, 255)
        let ring = ChangeRing<ChangeRecord>(capacity: 2)
        ring.push(record)
        XCTAssertEqual(ring.pop()?.name, name)
    }
}

/// What one producer managed to push, in order (written by that producer only).
private final class AcceptedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var log: [UInt32] = []
    func add(_ value: UInt32) { lock.lock(); log.append(value); lock.unlock() }
    var values: [UInt32] { lock.lock(); defer { lock.unlock() }; return log }
}
