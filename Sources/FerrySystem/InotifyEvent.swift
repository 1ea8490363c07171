/// One event read from an inotify instance.
public struct InotifyEvent: Sendable, Equatable {
    /// The watch it came from (-1 for a queue overflow).
    public var watch: Int32
    /// The event bits (Inotify.modify, ...).
    public var mask: UInt32
    /// The entry name within the watched directory; empty for the directory itself.
    public var name: [UInt8]

    public init(watch: Int32, mask: UInt32, name: [UInt8]) {
        self.watch = watch; self.mask = mask; self.name = name
    }

    static let headerSize = 16

    /// Decodes `struct inotify_event` records (i32 wd, u32 mask, u32 cookie, u32 len, name
    /// padded with NULs). A record that does not fit ends the parse.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> [InotifyEvent] {
        var events: [InotifyEvent] = []
        var offset = 0
        while offset + headerSize <= bytes.count {
            let watch = Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self))
            let mask = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
            let nameLength = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)))
            let nameStart = offset + headerSize
            guard nameLength <= 4096, nameStart + nameLength <= bytes.count else { break }
            let raw = bytes[nameStart..<(nameStart + nameLength)]
            let name = Array(raw.prefix { $0 != 0 })
            events.append(InotifyEvent(watch: watch, mask: mask, name: name))
            offset = nameStart + nameLength
        }
        return events
    }
}
