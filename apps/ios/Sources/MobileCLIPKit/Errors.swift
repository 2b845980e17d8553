/// Errors thrown by MobileCLIPKit; the message says what to fix.
public enum MobileCLIPError: Error, CustomStringConvertible, Equatable {
    case missingFile(String)
    case invalidData(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .missingFile(let what): return "missing file: \(what)"
        case .invalidData(let what): return "invalid data: \(what)"
        case .unsupported(let what): return "unsupported: \(what)"
        }
    }
}
