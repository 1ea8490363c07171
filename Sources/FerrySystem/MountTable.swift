import Glibc

/// One line of /proc/self/mountinfo.
public struct MountEntry: Sendable {
    /// Device numbers of the mounted file system (for FUSE, the minor is the connection number
    /// under /sys/fs/fuse/connections).
    public let major: UInt32, minor: UInt32
    /// Where it is mounted (octal escapes decoded).
    public let mountpoint: String
    /// The mount's own options (rw/ro, nosuid, nodev, noexec, the atime mode, ...), not the
    /// file system's.
    public let options: [String]
}

/// The calling process's mount table.
public enum MountTable {
    /// Every mount in /proc/self/mountinfo (empty if it cannot be read).
    public static func entries() -> [MountEntry] {
        guard let file = fopen("/proc/self/mountinfo", "r") else { return [] }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        var entries: [MountEntry] = []
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(separator: " ")
            guard fields.count > 4 else { continue }
            let device = fields[2].split(separator: ":")
            guard device.count == 2, let major = UInt32(device[0]), let minor = UInt32(device[1]) else { continue }
            entries.append(MountEntry(major: major, minor: minor, mountpoint: unescape(String(fields[4])),
                                      options: fields.count > 5 ? fields[5].split(separator: ",").map(String.init) : []))
        }
        return entries
    }

    /// Decodes mountinfo's octal escapes ("\040" for a space, "\134" for a backslash, ...).
    static func unescape(_ s: String) -> String {
        var out = [UInt8](), bytes = Array(s.utf8), i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
               let v = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v); i += 4
            } else { out.append(bytes[i]); i += 1 }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
