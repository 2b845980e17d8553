// Prints the 77 CLIP token ids of each stdin line as a compact JSON array, one line per input
// line, so other tools (and the Python parity test) can compare tokenizers.
import Foundation
import MobileCLIPKit

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("mobileclip-tokenize: \(message)\n".utf8))
    exit(2)
}

let usage = "usage: mobileclip-tokenize [--assets EXPORT_DIR] < lines.txt"
var assetsFolder: URL?
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--assets":
        guard let path = arguments.popFirst() else { fail("--assets needs a folder\n\(usage)") }
        assetsFolder = URL(fileURLWithPath: path)
    case "-h", "--help":
        print(usage)
        exit(0)
    default:
        fail("unknown argument \(argument)\n\(usage)")
    }
}

let tokenizer: CLIPTokenizer
do {
    tokenizer = try assetsFolder.map { try CLIPTokenizer(exportFolder: $0) } ?? CLIPTokenizer()
} catch {
    fail("\(error)")
}

while let line = readLine(strippingNewline: true) {
    print("[" + tokenizer.tokenize(line).map(String.init).joined(separator: ",") + "]")
}
