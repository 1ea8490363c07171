/// One host change, reduced to node ids the kernel holds: what one ring slot carries.
///
/// Plain data of fixed size (the name is stored inline, up to NAME_MAX bytes), so a slot can
/// be written by a producer without allocating.
public struct ChangeRecord: BitwiseCopyable, Sendable {
    /// What changed.
    public enum Kind: UInt8, Sendable, BitwiseCopyable {
        /// Attributes of `node` (mode, owner, times, xattrs).
        case attributes
        /// Contents (and so size and times) of `node`.
        case data
        /// The name `name` in directory `parent` now refers to something else or nothing
        /// (created, renamed from or to); `node` is the file it named or now names, or 0.
        case entry
        /// The name `name` in directory `parent` was removed; `node` is the removed file or 0.
        case removed
    }

    /// Longest name a record carries (NAME_MAX).
    public static let maxNameLength = 255

    public let kind: Kind
    /// The inode concerned, or 0 when the kernel does not hold it.
    public let node: UInt64
    /// The directory of an entry change, or 0.
    public let parent: UInt64
    private let nameLength: UInt8
    private let nameBytes: InlineArray<255, UInt8>

    /// A change to the inode `node` itself.
    public init(kind: Kind, node: UInt64) {
        self.kind = kind
        self.node = node
        parent = 0
        nameLength = 0
        nameBytes = InlineArray(repeating: 0)
    }

    /// A change to the name `name` in `parent` (names longer than NAME_MAX are cut; the host
    /// cannot create them).
    public init(kind: Kind, parent: UInt64, name: some Collection<UInt8>, node: UInt64) {
        self.kind = kind
        self.node = node
        self.parent = parent
        var bytes = InlineArray<255, UInt8>(repeating: 0)
        var count = 0
        for byte in name.prefix(ChangeRecord.maxNameLength) {
            bytes[count] = byte
            count += 1
        }
        nameLength = UInt8(count)
        nameBytes = bytes
    }

    /// Whether the record is about a directory entry (it has a parent and a name).
    public var isEntryChange: Bool { kind == .entry || kind == .removed }

    /// The entry's name (empty for inode changes).
    public var name: [UInt8] {
        (0..<Int(nameLength)).map { nameBytes[$0] }
    }
}
