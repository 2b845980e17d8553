import Foundation

/// Something that turns a preprocessed image into an embedding (a CoreML model, or fixed
/// vectors in tests).
public protocol ImageEncoding {
    func encode(image: ImageTensor) throws -> [Float]
}

/// Something that turns `contextLength` token ids into an embedding.
public protocol TextEncoding {
    func encode(tokens: [Int32]) throws -> [Float]
}

/// Small vector helpers; embeddings are short (512–1024), so plain loops are fast enough.
public enum VectorMath {
    public static func dot(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "embedding sizes differ: \(a.count) vs \(b.count)")
        var sum: Float = 0
        for i in a.indices { sum += a[i] * b[i] }
        return sum
    }

    /// `v / ‖v‖`; a zero vector stays zero rather than becoming NaN.
    public static func normalized(_ v: [Float]) -> [Float] {
        let norm = dot(v, v).squareRoot()
        return norm > 0 ? v.map { $0 / norm } : v
    }

    public static func cosine(_ a: [Float], _ b: [Float]) -> Float {
        dot(normalized(a), normalized(b))
    }

    /// Numerically stable softmax.
    public static func softmax(_ logits: [Float]) -> [Float] {
        guard let top = logits.max() else { return [] }
        let exps = logits.map { ($0 - top).exp() }
        let total = exps.reduce(0, +)
        return exps.map { $0 / total }
    }

    /// Element-wise mean of equally sized vectors.
    public static func mean(_ vectors: [[Float]]) -> [Float] {
        guard let first = vectors.first else { return [] }
        var sum = [Float](repeating: 0, count: first.count)
        for v in vectors {
            precondition(v.count == sum.count, "embedding sizes differ")
            for i in v.indices { sum[i] += v[i] }
        }
        return sum.map { $0 / Float(vectors.count) }
    }
}

private extension Float {
    func exp() -> Float { Float(Foundation.exp(Double(self))) }
}
