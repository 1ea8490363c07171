import XCTest
@testable import FerryNotify
import FerryProtocol

/// Coalescing: however many records name one node or entry, one notification goes out.
final class InvalidationBatchTests: XCTestCase {
    func testTenWritesToOneFileAreOneInvalidation() {
        var batch = InvalidationBatch()
        for _ in 0..<10 { batch.add(ChangeRecord(kind: .data, node: 42)) }
        XCTAssertEqual(batch.recordCount, 10)
        XCTAssertEqual(batch.notifications(), [.invalidateInode(node: 42, offset: 0, length: 0)])
    }

    func testAttributesAloneKeepTheDataAndDataWins() {
        var batch = InvalidationBatch()
        batch.add(ChangeRecord(kind: .attributes, node: 7))
        XCTAssertEqual(batch.notifications(), [.invalidateInode(node: 7, offset: -1, length: 0)])
        batch.add(ChangeRecord(kind: .data, node: 7))
        batch.add(ChangeRecord(kind: .attributes, node: 7))
        XCTAssertEqual(batch.notifications(), [.invalidateInode(node: 7, offset: 0, length: 0)])
    }

    func testEntryChangesInvalidateTheNameTheDirectoryAndTheChild() {
        var batch = InvalidationBatch()
        let name = Array("new.txt".utf8)
        batch.add(ChangeRecord(kind: .entry, parent: 1, name: name, node: 0))
        batch.add(ChangeRecord(kind: .entry, parent: 1, name: name, node: 9))
        XCTAssertEqual(batch.notifications(), [
            .invalidateEntry(parent: 1, name: name),
            .invalidateInode(node: 1, offset: 0, length: 0),      // listing and times of the directory
            .invalidateInode(node: 9, offset: -1, length: 0),     // ctime of the file
        ])
    }

    func testARemovalWithAKnownChildBecomesADelete() {
        var batch = InvalidationBatch()
        let name = Array("gone".utf8)
        batch.add(ChangeRecord(kind: .entry, parent: 3, name: name, node: 0))
        batch.add(ChangeRecord(kind: .removed, parent: 3, name: name, node: 8))
        batch.add(ChangeRecord(kind: .removed, parent: 3, name: Array("unknown".utf8), node: 0))
        XCTAssertEqual(batch.notifications(), [
            .delete(parent: 3, child: 8, name: name),
            .invalidateEntry(parent: 3, name: Array("unknown".utf8)),
            .invalidateInode(node: 3, offset: 0, length: 0),
            .invalidateInode(node: 8, offset: -1, length: 0),
        ])
    }

    func testEmptyBatchSendsNothing() {
        let batch = InvalidationBatch()
        XCTAssertTrue(batch.isEmpty)
        XCTAssertEqual(batch.notifications(), [])
    }
}
