import XCTest
@testable import MobileCLIPKit

/// A text encoder with fixed outputs: prompts containing a class name map to that class's vector.
private final class FixedTextEncoder: TextEncoding {
    let tokenizer: CLIPTokenizer
    let table: [(prompt: String, embedding: [Float])]
    private(set) var calls = 0

    init(tokenizer: CLIPTokenizer, table: [(String, [Float])]) {
        self.tokenizer = tokenizer
        self.table = table.map { (prompt: $0.0, embedding: $0.1) }
    }

    func encode(tokens: [Int32]) throws -> [Float] {
        calls += 1
        guard let match = table.first(where: { tokenizer.tokenizeInt32($0.prompt) == tokens }) else {
            throw TestDataError("unexpected prompt tokens \(tokens.prefix(10))")
        }
        return match.embedding
    }
}

final class RetrievalTests: XCTestCase {
    private static let tokenizer = Result { try CLIPTokenizer() }

    /// Cat prompts point along x, dog along y; the image at (0.6, 0.8) has cosine 0.6 to cat and
    /// 0.8 to dog, so with logit scale 100: p(dog) = 1 / (1 + e^-20).
    func testZeroShotHandCheckedCase() throws {
        let tokenizer = try Self.tokenizer.get()
        let encoder = FixedTextEncoder(tokenizer: tokenizer, table: [
            ("a photo of a cat.", [2, 0]), ("a photo of a dog.", [0, 3]),
        ])
        let classifier = ZeroShotClassifier(tokenizer: tokenizer, textEncoder: encoder, logitScale: 100)
        let predictions = try classifier.classify(
            imageEmbedding: [3, 4], classNames: ["cat", "dog"], templates: ["a photo of a {}."])
        XCTAssertEqual(predictions.map(\.label), ["dog", "cat"])
        XCTAssertEqual(predictions[0].similarity, 0.8, accuracy: 1e-6)
        XCTAssertEqual(predictions[1].similarity, 0.6, accuracy: 1e-6)
        XCTAssertEqual(predictions[0].probability, Float(1 / (1 + exp(-20.0))), accuracy: 1e-6)
        XCTAssertEqual(predictions[1].probability, Float(exp(-20.0) / (1 + exp(-20.0))), accuracy: 1e-9)

        let top1 = try classifier.classify(
            imageEmbedding: [1, 0], classNames: ["cat", "dog"], templates: ["a photo of a {}."], topK: 1)
        XCTAssertEqual(top1.map(\.label), ["cat"])
        XCTAssertEqual(encoder.calls, 2, "class embeddings are cached across images")
    }

    /// Two templates for one class: (1, 0) and (0.6, 0.8) average to (0.8, 0.4), normalized
    /// (2, 1) / √5; the image along y then has cosine 1/√5.
    func testTemplatesAreAveragedPerClass() throws {
        let tokenizer = try Self.tokenizer.get()
        let encoder = FixedTextEncoder(tokenizer: tokenizer, table: [
            ("a photo of a cat.", [1, 0]), ("a drawing of a cat.", [6, 8]),
        ])
        let classifier = ZeroShotClassifier(tokenizer: tokenizer, textEncoder: encoder, logitScale: 100)
        let embedding = try classifier.classEmbeddings(
            classNames: ["cat"], templates: ["a photo of a {}.", "a drawing of a {}."])[0]
        XCTAssertEqual(embedding[0], 2 / Float(5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(embedding[1], 1 / Float(5).squareRoot(), accuracy: 1e-6)
        let prediction = try classifier.classify(
            imageEmbedding: [0, 5], classNames: ["cat"], templates: ["a photo of a {}.", "a drawing of a {}."])
        XCTAssertEqual(prediction[0].similarity, 1 / Float(5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(prediction[0].probability, 1, accuracy: 1e-6)
    }

    func testPromptFromPrefixAndSuffix() {
        let template = ZeroShotClassifier.template(prefix: "a photo of a ", suffix: ".")
        XCTAssertEqual(ZeroShotClassifier.prompt(template, className: "dog"), "a photo of a dog.")
        XCTAssertEqual(ZeroShotClassifier.prompt("a photo of a ", className: "dog"), "a photo of a dog")
    }

    func testSoftmaxIsStableForLargeLogits() {
        let p = VectorMath.softmax([1000, 1000, -1000])
        XCTAssertEqual(p[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(p[2], 0, accuracy: 1e-6)
        XCTAssertEqual(VectorMath.normalized([0, 0]), [0, 0])
    }

    func testIndexSearch() {
        var index = EmbeddingIndex()
        index.add(id: "beach", embedding: [1, 0, 0])
        index.add(id: "sunset", embedding: [0.8, 0.6, 0])
        index.add(id: "forest", embedding: [0, 0, 2])
        XCTAssertEqual(index.count, 3)

        let textHits = index.search(text: [1, 0.1, 0], topK: 2)
        XCTAssertEqual(textHits.map(\.label), ["beach", "sunset"])

        let similar = index.similar(to: "beach", topK: 5)
        XCTAssertEqual(similar.map(\.label), ["sunset", "forest"], "the query image itself is excluded")
        XCTAssertEqual(similar[0].similarity, 0.8, accuracy: 1e-6)
        XCTAssertEqual(similar[1].similarity, 0, accuracy: 1e-6)

        index.add(id: "forest", embedding: [1, 0, 0])
        XCTAssertEqual(index.count, 3, "re-adding an id replaces its embedding")
        XCTAssertEqual(index.similar(to: "beach", topK: 1).map(\.label), ["forest"])
        index.remove(id: "forest")
        XCTAssertEqual(index.ids, ["beach", "sunset"])
        XCTAssertEqual(index.similar(to: "missing", topK: 1), [])
    }
}
