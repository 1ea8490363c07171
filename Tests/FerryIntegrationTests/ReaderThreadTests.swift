import Foundation
import XCTest

/// /dev/fuse reader threads (DevFuseServer): with several readers, a client that waits for
/// each reply costs one read of /dev/fuse per request. Readers that slept in epoll each took a
/// wake-up and a failed read per request, racing for it (README, `--threads`; protocol/locks.md).
final class ReaderThreadTests: XCTestCase {
    /// "reads of /dev/fuse: N found a request, M found none" from the exit log.
    private func reads(_ log: String) throws -> (found: Int, empty: Int) {
        guard let line = log.split(separator: "\n").last(where: { $0.contains("reads of /dev/fuse:") }) else {
            throw TestFailure("no read totals in the log:\n\(log)")
        }
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        guard numbers.count >= 2 else { throw TestFailure("cannot read \(line)") }   // a timestamp first
        return (numbers[numbers.count - 2], numbers[numbers.count - 1])
    }

    func testAWaitingClientCostsOneReadPerRequest() throws {
        let server = try FerryServer(arguments: ["--threads", "4", "--cache", "never", "--transport", "dev"])
        try Data("x".utf8).write(to: URL(fileURLWithPath: server.source + "/f"))
        var attributes = stat()
        for _ in 0..<3_000 {
            guard stat(server.mountpoint + "/f", &attributes) == 0 else { return XCTFail("stat: \(errno)") }
        }
        XCTAssertEqual(attributes.st_size, 1)
        XCTAssertEqual(server.stop(), 0, server.log)
        let (found, empty) = try reads(server.log)
        XCTAssertGreaterThanOrEqual(found, 3_000, server.log)   // --cache never: a LOOKUP per stat
        XCTAssertLessThan(empty, found / 20, server.log)
    }
}
