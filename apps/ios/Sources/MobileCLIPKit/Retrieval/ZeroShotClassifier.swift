/// One ranked answer of a zero-shot classification or a search.
public struct Prediction: Equatable, Sendable {
    public var label: String
    /// Cosine similarity between the query and this entry.
    public var similarity: Float
    /// Softmax probability over all classes (zero-shot); for searches equal to `similarity`.
    public var probability: Float

    public init(label: String, similarity: Float, probability: Float) {
        self.label = label
        self.similarity = similarity
        self.probability = probability
    }
}

/// Zero-shot image classification: each class name is put into every prompt template, the text
/// embeddings are averaged per class and L2-normalized, and an image is scored by
/// `softmax(logitScale * cosine)`.
///
/// Class embeddings are cached per (class list, templates); changing the prompt in the UI costs
/// one pass of the text encoder, every camera frame afterwards costs only dot products.
public final class ZeroShotClassifier {
    /// Stands for the class name in a template, e.g. "a photo of a {}.".
    public static let placeholder = "{}"

    public let tokenizer: CLIPTokenizer
    public let textEncoder: TextEncoding
    public let logitScale: Float

    private struct CacheKey: Hashable {
        var classNames: [String]
        var templates: [String]
    }
    private var cache: [CacheKey: [[Float]]] = [:]

    public init(tokenizer: CLIPTokenizer, textEncoder: TextEncoding, logitScale: Float) {
        self.tokenizer = tokenizer
        self.textEncoder = textEncoder
        self.logitScale = logitScale
    }

    /// `template` with the class name substituted; a template without `{}` gets the name appended.
    public static func prompt(_ template: String, className: String) -> String {
        template.contains(placeholder)
            ? template.replacingOccurrences(of: placeholder, with: className)
            : template + className
    }

    /// A template built from the demo app's editable prefix and suffix.
    public static func template(prefix: String, suffix: String) -> String {
        prefix + placeholder + suffix
    }

    /// One L2-normalized embedding per class (cached).
    public func classEmbeddings(classNames: [String], templates: [String]) throws -> [[Float]] {
        precondition(!templates.isEmpty, "at least one prompt template is needed")
        let key = CacheKey(classNames: classNames, templates: templates)
        if let cached = cache[key] { return cached }
        let embeddings = try classNames.map { name in
            let perTemplate = try templates.map { template in
                VectorMath.normalized(try textEncoder.encode(
                    tokens: tokenizer.tokenizeInt32(Self.prompt(template, className: name))))
            }
            return VectorMath.normalized(VectorMath.mean(perTemplate))
        }
        cache[key] = embeddings
        return embeddings
    }

    /// Classes ranked by probability, best first; `topK` nil keeps them all.
    public func classify(
        imageEmbedding: [Float], classNames: [String], templates: [String], topK: Int? = nil
    ) throws -> [Prediction] {
        let classes = try classEmbeddings(classNames: classNames, templates: templates)
        let image = VectorMath.normalized(imageEmbedding)
        let similarities = classes.map { VectorMath.dot(image, $0) }
        let probabilities = VectorMath.softmax(similarities.map { $0 * logitScale })
        let ranked = classNames.indices
            .map { Prediction(label: classNames[$0], similarity: similarities[$0], probability: probabilities[$0]) }
            .sorted { $0.probability > $1.probability }
        return Array(ranked.prefix(topK ?? ranked.count))
    }

    public func clearCache() {
        cache.removeAll()
    }
}
