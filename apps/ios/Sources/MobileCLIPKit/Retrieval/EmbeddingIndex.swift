/// A small in-memory index of L2-normalized image embeddings for image→image and text→image
/// search by cosine similarity (exhaustive; fine for a photo library sample of a few thousand).
public struct EmbeddingIndex: Sendable {
    public private(set) var ids: [String] = []
    private var vectors: [[Float]] = []

    public init() {}

    public var count: Int { ids.count }

    /// Adds or replaces the embedding stored under `id`.
    public mutating func add(id: String, embedding: [Float]) {
        if let dimension = vectors.first?.count {
            precondition(embedding.count == dimension, "embedding size \(embedding.count) != index size \(dimension)")
        }
        let vector = VectorMath.normalized(embedding)
        if let existing = ids.firstIndex(of: id) {
            vectors[existing] = vector
        } else {
            ids.append(id)
            vectors.append(vector)
        }
    }

    public mutating func remove(id: String) {
        guard let index = ids.firstIndex(of: id) else { return }
        ids.remove(at: index)
        vectors.remove(at: index)
    }

    /// The `topK` entries most similar to `query`, best first; ties keep insertion order.
    /// `excluding` drops an id, e.g. the query image itself in image→image search.
    public func search(_ query: [Float], topK: Int, excluding: String? = nil) -> [Prediction] {
        let q = VectorMath.normalized(query)
        let scored = ids.indices
            .filter { ids[$0] != excluding }
            .map { (index: $0, score: VectorMath.dot(q, vectors[$0])) }
            .sorted { $0.score != $1.score ? $0.score > $1.score : $0.index < $1.index }
        return scored.prefix(max(topK, 0)).map {
            Prediction(label: ids[$0.index], similarity: $0.score, probability: $0.score)
        }
    }

    /// Image→image: entries most similar to a stored image, not counting itself.
    public func similar(to id: String, topK: Int) -> [Prediction] {
        guard let index = ids.firstIndex(of: id) else { return [] }
        return search(vectors[index], topK: topK, excluding: id)
    }

    /// Text→image: entries best matching a text embedding.
    public func search(text embedding: [Float], topK: Int) -> [Prediction] {
        search(embedding, topK: topK)
    }
}
