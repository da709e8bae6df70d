// Small edits on lib_api's mxnet::ext::Graph that keep both directions of
// every edge consistent.  lib_api serializes a graph in the order of a DFS
// over the consumer lists (Node::outputs), so a consumer list that disagrees
// with an input list would produce a JSON graph in the wrong order.
#pragma once

#include <string>
#include <vector>

#include "mxnet/lib_api.h"

namespace bnq {

using mxnet::ext::Graph;
using mxnet::ext::Node;
using mxnet::ext::NodeEntry;

// Consumers of output `entry` of `node`, as {consumer, input index} pairs.
std::vector<NodeEntry> ConsumersOf(const Node* node, int entry);

// True if output `entry` of `node` is one of the graph's outputs.
bool IsGraphOutput(const Graph* graph, const Node* node, int entry);

// Number of uses (consumers and graph outputs) of output `entry` of `node`.
size_t UseCount(const Graph* graph, const Node* node, int entry);

// Points input `index` of `consumer` at output `entry` of `producer`.
// `index` may equal consumer->inputs.size() to append an input (larger
// indices are an error: they would leave holes).
void SetInput(Node* consumer, size_t index, Node* producer, int entry);

// Removes all edges into `node` (it keeps no inputs and is no producer's
// consumer any more): for a node whose uses were all redirected elsewhere.
void DetachNode(Node* node);

// Makes every use of output `from_entry` of `from` (consumers and graph
// outputs) use output `to_entry` of `to` instead.
void RedirectUses(Graph* graph, Node* from, int from_entry, Node* to, int to_entry);

// The graph's nodes, producers before consumers.
std::vector<Node*> NodesInOrder(const Graph* graph);

}  // namespace bnq
