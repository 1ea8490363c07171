import Glibc

/// The holders of classic (process-associated) POSIX locks, as the host's /proc/locks lists
/// them. F_OFD_GETLK numbers a conflicting lock's holder in the caller's pid namespace: from
/// inside the sandbox's pid namespace a host process's lock reports pid 0. /proc/locks, read
/// through the kept descriptor of the host's /proc, numbers holders as the host does, which is
/// what FUSE callers expect in F_GETLK's answer.
public enum ProcLocks {
    /// The host pid holding the classic lock `found` (an F_OFD_GETLK answer for a lock on the
    /// file open as `fd`), or nil when /proc/locks has no such lock (it went away meanwhile).
    public static func holder(of found: HostLock, onFileOpenAs fd: Int32) -> UInt32? {
        var file = stat()
        guard fstat(fd, &file) == 0 else { return nil }
        let descriptor = ProcRoot.open("locks")
        guard descriptor >= 0 else { return nil }
        defer { Glibc.close(descriptor) }
        guard let text = try? HostProcess.readAll(descriptor, limit: 1 << 24) else { return nil }
        let device = DeviceNumber.split(UInt64(file.st_dev))
        let location = "\(String(device.major, radix: 16).leftPadded(2)):\(String(device.minor, radix: 16).leftPadded(2)):\(file.st_ino)"
        let type = found.type == HostLock.write ? "WRITE" : "READ"
        let end = found.length == 0 ? "EOF" : String(found.start + found.length - 1)
        for line in text.split(separator: UInt8(ascii: "\n")) {
            // "7: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters carry "->" and are skipped.
            let fields = line.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            guard fields.count == 8, fields[1] == "POSIX", fields[3] == type, fields[5] == location,
                  fields[6] == String(found.start), fields[7] == end, let pid = UInt32(fields[4]) else { continue }
            return pid
        }
        return nil
    }
}

extension String {
    /// The string with zeros in front up to `width` characters (as "%02x" prints).
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
