#include "graph_edit.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace bnq {

std::vector<NodeEntry> ConsumersOf(const Node* node, int entry) {
  std::vector<NodeEntry> uses;
  for (const NodeEntry& out : node->outputs) {
    if (out.node->inputs[out.entry].entry == entry) uses.push_back(out);
  }
  return uses;
}

bool IsGraphOutput(const Graph* graph, const Node* node, int entry) {
  for (const NodeEntry& head : graph->outputs) {
    if (head.node == node && head.entry == entry) return true;
  }
  return false;
}

size_t UseCount(const Graph* graph, const Node* node, int entry) {
  return ConsumersOf(node, entry).size() + (IsGraphOutput(graph, node, entry) ? 1 : 0);
}

namespace {

void RemoveConsumer(Node* producer, const Node* consumer, size_t index) {
  auto& outs = producer->outputs;
  outs.erase(std::remove_if(outs.begin(), outs.end(),
                            [&](const NodeEntry& e) {
                              return e.node == consumer && static_cast<size_t>(e.entry) == index;
                            }),
             outs.end());
}

}  // namespace

void SetInput(Node* consumer, size_t index, Node* producer, int entry) {
  if (index > consumer->inputs.size()) {
    throw std::out_of_range("SetInput: input " + std::to_string(index) + " of " + consumer->name +
                            " would leave a hole");
  }
  if (index < consumer->inputs.size()) {
    RemoveConsumer(consumer->inputs[index].node, consumer, index);
  } else {
    consumer->inputs.resize(index + 1);
  }
  consumer->inputs[index] = {producer, entry};
  producer->outputs.push_back({consumer, static_cast<int>(index)});
}

void DetachNode(Node* node) {
  for (size_t i = 0; i < node->inputs.size(); ++i) {
    RemoveConsumer(node->inputs[i].node, node, i);
  }
  node->inputs.clear();
}

void RedirectUses(Graph* graph, Node* from, int from_entry, Node* to, int to_entry) {
  for (const NodeEntry& use : ConsumersOf(from, from_entry)) {
    SetInput(use.node, use.entry, to, to_entry);
  }
  for (NodeEntry& head : graph->outputs) {
    if (head.node == from && head.entry == from_entry) head = {to, to_entry};
  }
}

std::vector<Node*> NodesInOrder(const Graph* graph) {
  std::vector<Node*> order = graph->topological_sort();  // consumers first
  std::reverse(order.begin(), order.end());
  return order;
}

}  // namespace bnq
