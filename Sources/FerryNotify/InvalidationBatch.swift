import FerryProtocol

/// The records drained from the ring in one go, coalesced: each node is invalidated once (data
/// wins over attributes) and each directory entry once, however many changes hit it.
struct InvalidationBatch {
    /// How much of a node's cache to drop.
    enum Scope: Comparable { case attributes, data }

    private struct EntryKey: Hashable {
        let parent: UInt64
        let name: [UInt8]
    }

    private var nodes: [UInt64: Scope] = [:]
    private var nodeOrder: [UInt64] = []
    /// Per entry: the removed child, if a removal was seen, else 0.
    private var entries: [EntryKey: UInt64] = [:]
    private var entryOrder: [EntryKey] = []
    /// Records added.
    private(set) var recordCount = 0

    var isEmpty: Bool { recordCount == 0 }

    mutating func add(_ record: ChangeRecord) {
        recordCount += 1
        switch record.kind {
        case .attributes:
            invalidate(record.node, .attributes)
        case .data:
            invalidate(record.node, .data)
        case .entry, .removed:
            let key = EntryKey(parent: record.parent, name: record.name)
            let removedChild = record.kind == .removed ? record.node : 0
            if let known = entries[key] {
                if known == 0 && removedChild != 0 { entries[key] = removedChild }
            } else {
                entries[key] = removedChild
                entryOrder.append(key)
            }
            // The directory's size, times and cached listing change; the child's ctime or
            // link count does.
            invalidate(record.parent, .data)
            invalidate(record.node, .attributes)
        }
    }

    private mutating func invalidate(_ node: UInt64, _ scope: Scope) {
        guard node != 0 else { return }
        if let known = nodes[node] {
            if scope > known { nodes[node] = scope }
        } else {
            nodes[node] = scope
            nodeOrder.append(node)
        }
    }

    /// The notifications to send, names first: a removed entry whose child is known becomes a
    /// DELETE (the invalidator falls back to INVAL_ENTRY if the kernel refuses it), any other
    /// entry an INVAL_ENTRY; then one INVAL_INODE per node (data: the whole file, since host
    /// watchers do not report ranges; attributes: offset -1).
    func notifications() -> [FUSENotification] {
        var out: [FUSENotification] = []
        out.reserveCapacity(entryOrder.count + nodeOrder.count)
        for key in entryOrder {
            let child = entries[key] ?? 0
            out.append(child != 0 ? .delete(parent: key.parent, child: child, name: key.name)
                                  : .invalidateEntry(parent: key.parent, name: key.name))
        }
        for node in nodeOrder {
            out.append(.invalidateInode(node: node, offset: nodes[node] == .data ? 0 : -1, length: 0))
        }
        return out
    }
}
