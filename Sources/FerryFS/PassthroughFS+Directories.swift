import FerrySystem
import Glibc

/// One entry of a directory listing.
public struct DirectoryEntry: Sendable {
    /// Host inode number (as the host reports it in d_ino).
    public let ino: UInt64
    /// The offset cookie that continues the listing after this entry.
    public let nextOffset: UInt64
    /// d_type (DT_* value).
    public let type: UInt32
    /// The name bytes.
    public let name: [UInt8]
}

/// Directories: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR.
extension PassthroughFS {
    /// OPENDIR: opens the directory for reading with the caller's permissions.
    public func opendir(_ ctx: ThreadCredentials, nodeID: UInt64) throws(Errno) -> UInt64 {
        try openFiles.reserving { () throws(Errno) in
            try withNode(nodeID, ctx) { (inode, fd) throws(Errno) in
                guard inode.type == .directory else { throw Errno.notDirectory }
                let dir = try Host.reopen(fd, flags: HostFlags.oRdOnly | HostFlags.oDirectory)
                return openFiles.insert(fd: dir, nodeID: nodeID)
            }
        }
    }

    /// READDIR / READDIRPLUS from `offset` (0 or a `nextOffset` handed out before).
    ///
    /// `fits(nameLength)` says whether one more entry fits the reply; `add` receives it, with
    /// the looked-up node for READDIRPLUS (nil for "." and "..", or when the entry vanished).
    /// Entries are looked up only once they are known to fit, so no reference is ever lost.
    public func readdir(_ ctx: ThreadCredentials, fh: UInt64, offset: UInt64, size: Int, plus: Bool,
                        fits: (Int) -> Bool, add: (DirectoryEntry, Entry?) -> Void) throws(Errno) {
        let dir = try openFiles.get(fh)
        let fd = dir.fd.rawValue
        // Entries on the directory's own file system: d_ino says whether a node may be held.
        let directoryKey = plus ? (try? inodes.get(dir.nodeID))?.key : nil
        _ = try Host.lseek(fd, offset: Int64(bitPattern: offset), whence: SEEK_SET)
        // `size` is the client's; the engine caps it at the reply buffer, this at 1 MiB again.
        let chunk = max(min(plus ? size / 4 : size, 1 << 20), 1024)
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let filled = try buffer.withUnsafeMutableBytes { raw in Result { () throws(Errno) in try Host.getdents(fd, into: raw) } }.get()
            if filled == 0 { return }
            var position = 0
            while position < filled {
                let (ino, next, length, type) = buffer.withUnsafeBytes { raw in
                    (raw.loadUnaligned(fromByteOffset: position, as: UInt64.self),
                     raw.loadUnaligned(fromByteOffset: position + 8, as: Int64.self),
                     Int(raw.loadUnaligned(fromByteOffset: position + 16, as: UInt16.self)),
                     raw.load(fromByteOffset: position + 18, as: UInt8.self))
                }
                let nameStart = position + 19
                let nameEnd = buffer[nameStart..<(position + length)].firstIndex(of: 0) ?? (position + length)
                let name = Array(buffer[nameStart..<nameEnd])
                position += length
                guard fits(name.count) else { return }
                let entry = DirectoryEntry(ino: ino, nextOffset: UInt64(bitPattern: next), type: UInt32(type), name: name)
                var node: Entry? = nil
                if plus && name != [0x2e] && name != [0x2e, 0x2e] {
                    let mayBeHeld = directoryKey.map {
                        inodes.holdsNode(for: InodeKey(device: $0.device, inode: ino, mountID: $0.mountID))
                    } ?? true
                    node = try? lookupChild(dirFD: fd, name: CName(name), mayBeHeld: mayBeHeld)
                }
                add(entry, node)
            }
        }
    }
}
