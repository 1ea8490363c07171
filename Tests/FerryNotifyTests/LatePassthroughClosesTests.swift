@testable import FerryNotify
import Glibc
import XCTest

/// A bare CLOSE_WRITE right after a node's last passed-through writer was released is that
/// writer's close; one event per release, and only within the window.
final class LatePassthroughClosesTests: XCTestCase {
    func testOneReleaseExplainsOneCloseWithinTheWindow() {
        let late = LatePassthroughCloses()
        XCTAssertFalse(late.explains(closeOf: 7), "no release, no explanation")
        late.noteReleased(7)
        XCTAssertFalse(late.explains(closeOf: 8))
        XCTAssertTrue(late.explains(closeOf: 7))
        XCTAssertFalse(late.explains(closeOf: 7), "a second close is a host change")
    }

    func testAReleaseLongAgoExplainsNothing() {
        let late = LatePassthroughCloses()
        late.noteReleased(7)
        usleep(UInt32(LatePassthroughCloses.window / 1000) + 20_000)
        XCTAssertFalse(late.explains(closeOf: 7))
    }
}
