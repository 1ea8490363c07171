/// One event read from a fanotify group created with FAN_REPORT_DFID_NAME_TARGET.
public struct FanotifyEvent: Sendable, Equatable {
    /// The event bits (Fanotify.modify, ...).
    public var mask: UInt64
    /// The process that caused it (its thread-group id).
    public var pid: Int32
    /// The file system the handles belong to (its fsid, as `Fanotify.filesystemID` gives).
    public var filesystem: UInt64 = 0
    /// The changed object (FAN_EVENT_INFO_TYPE_FID): the file itself, or for entry events
    /// the entry's target.
    public var object: FileHandle?
    /// The directory and entry name (FAN_EVENT_INFO_TYPE_DFID_NAME).
    public var directory: FileHandle?
    public var name: [UInt8] = []

    public init(mask: UInt64, pid: Int32, object: FileHandle? = nil, directory: FileHandle? = nil, name: [UInt8] = []) {
        self.mask = mask; self.pid = pid; self.object = object; self.directory = directory; self.name = name
    }

    /// Decodes every event in `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> [FanotifyEvent] {
        var unused = 0
        return parse(bytes, skipped: &unused)
    }

    static let metadataSize = 24
    static let infoFID: UInt8 = 1
    static let infoDirFIDName: UInt8 = 2
    static let infoDirFID: UInt8 = 3

    /// Decodes the events in `bytes` (what one read(2) returned). Every length is checked: a
    /// record that does not fit ends the parse, and what was decoded so far is returned.
    /// Events caused by process `skipping` (and not overflows) are only counted in `skipped`,
    /// without decoding their file handles.
    public static func parse(_ bytes: UnsafeRawBufferPointer, skipping: Int32 = 0, skipped: inout Int) -> [FanotifyEvent] {
        var events: [FanotifyEvent] = []
        var offset = 0
        while offset + metadataSize <= bytes.count {
            let eventLength = Int(load(UInt32.self, bytes, offset))
            let metadataLength = Int(load(UInt16.self, bytes, offset + 6))
            guard eventLength >= metadataSize, metadataLength >= metadataSize, metadataLength <= eventLength,
                  offset + eventLength <= bytes.count else { break }
            var event = FanotifyEvent(mask: load(UInt64.self, bytes, offset + 8), pid: load(Int32.self, bytes, offset + 20))
            if skipping != 0 && event.pid == skipping && event.mask & Fanotify.queueOverflow == 0 {
                skipped += 1
                offset += eventLength
                continue
            }
            var info = offset + metadataLength
            let end = offset + eventLength
            while info + 4 <= end {
                let type = bytes[info]
                let length = Int(load(UInt16.self, bytes, info + 2))
                guard length >= 4, info + length <= end else { break }
                let record = UnsafeRawBufferPointer(rebasing: bytes[info..<(info + length)])
                switch type {
                case infoFID:
                    event.object = handle(in: record)?.handle
                    event.filesystem = filesystemID(in: record)
                case infoDirFIDName, infoDirFID:
                    event.filesystem = filesystemID(in: record)
                    if let (directory, nameStart) = handle(in: record) {
                        event.directory = directory
                        if type == infoDirFIDName { event.name = cString(record, from: nameStart) }
                    }
                default:
                    break
                }
                info += length
            }
            events.append(event)
            offset += eventLength
        }
        return events
    }

    /// The 8-byte fsid after the record's 4-byte header (0 if the record is too short).
    private static func filesystemID(in record: UnsafeRawBufferPointer) -> UInt64 {
        guard record.count >= 12 else { return 0 }
        return UInt64(load(UInt32.self, record, 4)) | UInt64(load(UInt32.self, record, 8)) << 32
    }

    /// The `struct file_handle` after the 4-byte header and 8-byte fsid of a FID record, and
    /// where the bytes after it start.
    private static func handle(in record: UnsafeRawBufferPointer) -> (handle: FileHandle, end: Int)? {
        let start = 12
        guard record.count >= start + 8 else { return nil }
        let size = Int(load(UInt32.self, record, start))
        let type = load(Int32.self, record, start + 4)
        let bytesStart = start + 8
        guard size <= 128, bytesStart + size <= record.count else { return nil }
        return (FileHandle(bytes: Array(record[bytesStart..<(bytesStart + size)]), type: type), bytesStart + size)
    }

    private static func cString(_ record: UnsafeRawBufferPointer, from start: Int) -> [UInt8] {
        guard start < record.count else { return [] }
        let tail = record[start...]
        let end = tail.firstIndex(of: 0) ?? record.count
        return Array(record[start..<end])
    }

    private static func load<T: FixedWidthInteger>(_ type: T.Type, _ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
        T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
