import XCTest
@testable import FerryFS

/// A new node skips its second stat only when no watcher dropped, or was matching, a change
/// since its first one (PassthroughFS.remember, protocol/notify-ring.md).
final class UnmatchedChangesTests: XCTestCase {
    func testQuietHostNeedsNoSecondStat() {
        let changes = UnmatchedChanges()
        let mark = changes.mark
        XCTAssertEqual(changes.matching { (7, missedNode: false) }, 7)
        XCTAssertFalse(changes.mayHaveMissed(since: mark), "a change matched to a node needs no second stat")
    }

    func testADroppedChangeAsksForASecondStat() {
        let changes = UnmatchedChanges()
        let mark = changes.mark
        _ = changes.matching { ((), missedNode: true) }
        XCTAssertTrue(changes.mayHaveMissed(since: mark))
        XCTAssertFalse(changes.mayHaveMissed(since: changes.mark), "a later mark starts afresh")
    }

    func testAMatchInProgressAsksForASecondStat() {
        let changes = UnmatchedChanges()
        let mark = changes.mark
        let seenDuring = changes.matching { (changes.mayHaveMissed(since: mark), missedNode: false) }
        XCTAssertTrue(seenDuring, "a registration during a match cannot know whether the match saw it")
        XCTAssertFalse(changes.mayHaveMissed(since: mark))
    }

    func testAnOverflowAsksForASecondStat() {
        let changes = UnmatchedChanges()
        let mark = changes.mark
        changes.lost()
        XCTAssertTrue(changes.mayHaveMissed(since: mark))
    }
}
