import CFerryVhost
import FerrySystem
import Glibc

/// One vhost-user connection's socket: reads whole front-end messages (header, payload,
/// descriptors) and writes replies. The only code that touches the socket.
public final class VhostChannel: Sendable {
    /// Descriptors one message may carry (a memory table's 8 regions).
    public static let maxFDs = 8
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// What a read produced.
    public enum Incoming {
        /// A well-formed message (its descriptors are now owned by the message).
        case message(VhostHeader, VhostMessage)
        /// The front-end closed the connection between messages.
        case closed
    }

    /// Reads the next message. Throws `VhostError` for a malformed one (after closing any
    /// descriptors it carried) or `Errno` for a socket failure.
    public func read() throws -> Incoming {
        var fds: [Int32] = []
        var headerBytes = [UInt8](repeating: 0, count: VhostHeader.size)
        let got = try receive(into: &headerBytes, fds: &fds, header: true)
        if got == 0 { return .closed }
        do {
            let header = try VhostHeader.decode(Array(headerBytes[0..<got]))
            var payload = [UInt8](repeating: 0, count: Int(header.size))
            var received = 0
            while received < payload.count {
                var chunk = [UInt8](repeating: 0, count: payload.count - received)
                let n = try receive(into: &chunk, fds: &fds, header: false)
                if n == 0 { throw VhostError.truncatedPayload(expected: payload.count, received: received) }
                payload.replaceSubrange(received..<(received + n), with: chunk[0..<n])
                received += n
            }
            let message = try VhostDecoder.decode(header, payload: payload, fds: fds)
            return .message(header, message)
        } catch {
            fds.forEach { _ = Glibc.close($0) }
            throw error
        }
    }

    /// Receives up to `buffer.count` bytes (all of them unless the stream ends), collecting
    /// descriptors into `fds`.
    private func receive(into buffer: inout [UInt8], fds: inout [Int32], header: Bool) throws -> Int {
        var total = 0
        while total < buffer.count {
            var received = [Int32](repeating: -1, count: VhostChannel.maxFDs + 1)
            var count: Int32 = 0, truncated: Int32 = 0
            let n = buffer.withUnsafeMutableBytes { raw in
                ferry_vhost_recv(fd, raw.baseAddress! + total, raw.count - total, &received,
                                 Int32(VhostChannel.maxFDs + 1), &count, &truncated)
            }
            if n < 0 {
                let error = Errno.current
                fds += received.prefix(Int(count))
                fds.forEach { _ = Glibc.close($0) }
                fds = []
                throw error
            }
            fds += received.prefix(Int(count))
            if truncated != 0 || fds.count > VhostChannel.maxFDs {
                fds.forEach { _ = Glibc.close($0) }
                let n = fds.count
                fds = []
                throw VhostError.tooManyFDs(received: n)
            }
            if n == 0 {
                if total > 0 && header { throw VhostError.shortHeader(total) }
                return total
            }
            total += n
        }
        return total
    }

    /// Writes a reply; false if the connection is gone.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { ferry_vhost_send(fd, $0.baseAddress! + sent, $0.count - sent, nil, 0) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    /// Ends the connection (wakes a reader blocked on it).
    public func shutdown() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
}
